"""What an agent's ``image`` means: a folder holding ``bot.py``, or a container image.

An absolute path or ``file://`` URL names a folder. The CLI insists on a ``:tag`` in the
image, so ``/srv/bots/echo:latest`` names the folder ``/srv/bots/echo``. A folder with
``requirements.txt``, ``pyproject.toml`` or ``uv.lock`` gets its own venv
(``cattery.backends.local.venvs``). Anything else is an image reference (``myorg/bot:1.2``),
run by the container backend.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.backends.base import PullAuth
from cattery.backends.container import ImageNotFoundError, check_reference
from cattery.backends.local import dependency_source
from cattery.control.agent_roots import check_inside_roots, check_path_shape
from cattery.errors import InvalidRequest, NotFound
from cattery.store import repositories as repo
from cattery.store.crypto import SecretBox
from cattery.store.models import SecretSetKind

#: the keys an image pull secret set holds
PULL_CREDENTIALS_KEY = "credentials"
PULL_HOST_KEY = "host"


@dataclass(frozen=True)
class ImageSource:
    """An agent's image, understood: exactly one of ``folder`` and ``reference`` is set."""

    folder: Path | None = None
    reference: str | None = None


def is_folder_image(image: str) -> bool:
    ref = image.strip()
    return ref.startswith(("/", "file://"))


def resolve_image(
    image: str, *, containers: bool, roots: Sequence[Path] | None = None
) -> ImageSource:
    """What ``image`` names, or a 400 that says why it can't run here.

    ``containers``: whether a container engine is configured to run image references.
    ``roots``: the folders a folder agent must be inside (None: anywhere).
    """
    if is_folder_image(image):
        folder = resolve_image_folder(image)
        if roots is not None:
            check_inside_roots(folder, roots)
        return ImageSource(folder=folder)
    if not containers:
        raise InvalidRequest(
            f"Image {image!r} is not the absolute path of a folder holding bot.py, and no "
            "container engine is configured to run it as an image "
            "(set CATTERY_CONTAINER__ENGINE_URL)"
        )
    return ImageSource(reference=check_reference(image.strip()))


def resolve_image_folder(image: str) -> Path:
    """The folder an image reference names, or a 400 that says why there is none."""
    ref = image.strip()
    if ref.startswith("file://"):
        ref = unquote(urlparse(ref).path)
    candidates = [ref]
    head, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        candidates.insert(0, head)
    for candidate in candidates:
        check_path_shape(candidate)
    absolute = [Path(c) for c in candidates if Path(c).is_absolute()]
    for path in absolute:
        if path.is_dir():
            if not (path / "bot.py").is_file():
                raise InvalidRequest(f"Image folder {path} has no bot.py")
            return path
    if absolute and not any(path.exists() for path in absolute):
        raise ImageNotFoundError(
            f"Image folder {absolute[0]} does not exist on this machine "
            "(the control plane's, which runs the agent)"
        )
    raise InvalidRequest(
        f"Image {image!r} is not an absolute path or file:// URL of a folder holding bot.py"
    )


def dependency_file(folder: Path) -> Path | None:
    """The file that decides a folder's dependencies (``uv.lock``, ``requirements.txt`` or
    ``pyproject.toml``; see ``cattery.backends.local.venvs``), or None."""
    source = dependency_source(folder)
    return None if source is None else folder / source.kind


def parse_credentials(value: str, registry: str | None = None) -> PullAuth:
    """``USERNAME:PASSWORD``, plain or base64-encoded (the CLI's ``--base64encode``)."""
    text = value.strip()
    if ":" not in text:
        try:
            text = base64.b64decode(text, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            text = ""
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise InvalidRequest("Image pull credentials must be USERNAME:PASSWORD (or its base64)")
    return PullAuth(username=username, password=password, registry=registry or None)


async def load_pull_auth(
    db: AsyncSession, box: SecretBox, organization_id: str, set_name: str | None
) -> PullAuth | None:
    """The credentials of the image pull secret ``set_name``; 404 if there is none."""
    if not set_name:
        return None
    found = await repo.get_secret_set(db, organization_id, set_name)
    if found is None or found.kind != SecretSetKind.IMAGE_PULL_SECRET:
        raise NotFound(f"Image pull secret {set_name!r} not found")
    values = await repo.get_secret_values(db, box, found)
    if PULL_CREDENTIALS_KEY not in values:
        raise InvalidRequest(f"Image pull secret {set_name!r} holds no credentials")
    return parse_credentials(values[PULL_CREDENTIALS_KEY], values.get(PULL_HOST_KEY))
