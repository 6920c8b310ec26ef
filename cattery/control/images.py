"""What an agent's ``image`` means on the local backend: a folder holding ``bot.py``.

The CLI insists on a ``:tag`` in the image, so ``/srv/bots/echo:latest`` names the folder
``/srv/bots/echo``. A folder with ``requirements.txt`` or ``pyproject.toml`` gets its own
package overlay, built once per content hash with uv.
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from loguru import logger

from cattery.errors import InvalidRequest

DEPENDENCY_FILES = ("requirements.txt", "pyproject.toml")


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
        path = Path(candidate)
        if not path.is_absolute():
            continue
        if path.is_dir():
            if not (path / "bot.py").is_file():
                raise InvalidRequest(f"Image folder {path} has no bot.py")
            return path
    raise InvalidRequest(
        f"Image {image!r} is not an absolute path or file:// URL of a folder holding bot.py"
    )


def dependency_file(folder: Path) -> Path | None:
    for name in DEPENDENCY_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


async def prepare_environment(folder: Path, envs_dir: Path) -> dict[str, str]:
    """Extra environment for the agent's instances: its own packages ahead of cattery's."""
    deps = dependency_file(folder)
    if deps is None:
        return {}
    digest = hashlib.sha256(deps.read_bytes()).hexdigest()[:16]
    target = envs_dir / digest
    if not (target / ".complete").exists():
        target.mkdir(parents=True, exist_ok=True)
        source = ["-r", str(deps)] if deps.name == "requirements.txt" else [str(folder)]
        cmd = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--target", str(target)]
        logger.info(f"Building the environment for {folder} from {deps.name}")
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            *source,
            "--python",
            sys.executable,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await proc.communicate()
        if proc.returncode != 0:
            tail = output.decode(errors="replace").strip().splitlines()[-5:]
            raise InvalidRequest(f"Installing {deps.name} failed: " + " | ".join(tail))
        (target / ".complete").touch()
    return {"PYTHONPATH": str(target)}
