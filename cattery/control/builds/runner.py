"""Running one build: its context unpacked, then a folder agent or an engine-built image.

Without a container engine a ``dailyco/pipecat-base`` project becomes a folder agent,
kept once per context hash under ``<state dir>/agents/``: the local backend runs its
``bot.py`` with the packages its requirements name. With an engine the Dockerfile is
built into a local image. Both are blocking file and engine work: these functions run in
a worker thread and report their output through ``on_line``.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cattery.backends.container import BuildFailed, build_image
from cattery.control.builds.dockerfile import (
    DockerfileNotUnderstood,
    is_pipecat_base,
    plan_folder,
)
from cattery.control.builds.uploads import extract_archive
from cattery.control.images import dependency_file

Log = Callable[[str], None]


class BuildError(Exception):
    """The build failed; the message is its ``errorMessage``."""


@dataclass(frozen=True)
class BuildResult:
    image: str
    size_bytes: int


def check_dockerfile_path(value: str) -> str:
    """A path inside the context, as the CLI sends it (``Dockerfile``, ``docker/Dockerfile``)."""
    path = PurePosixPath(value or "Dockerfile")
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"dockerfilePath {value!r} must be a path inside the build context")
    return str(path)


def _unpack(archive: Path, work: Path, dockerfile: str, on_line: Log) -> str:
    if work.exists():
        shutil.rmtree(work)
    extract_archive(archive, work)
    files = [p for p in work.rglob("*") if p.is_file()]
    on_line(f"Unpacked the build context: {len(files)} files")
    path = work / dockerfile
    if not path.is_file():
        raise BuildError(f"The build context has no {dockerfile}")
    return path.read_text(errors="replace")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def build_folder(
    archive: Path, *, work: Path, agents_dir: Path, context_hash: str, dockerfile: str, on_line: Log
) -> BuildResult:
    """The context as a folder agent, or ``BuildError`` naming what needs an engine."""
    text = _unpack(archive, work, dockerfile, on_line)
    try:
        plan = plan_folder(text)
    except DockerfileNotUnderstood as exc:
        on_line(f"ERROR: {exc}")
        raise BuildError(str(exc)) from None
    for step in plan.steps:
        on_line(step)
    if not (work / "bot.py").is_file():
        raise BuildError(
            "The build context has no bot.py at its root, where dailyco/pipecat-base runs it"
        )
    deps = dependency_file(work)
    on_line(
        f"Dependencies: {deps.name}, installed for the agent when it is deployed"
        if deps is not None
        else "Dependencies: none listed; the bot runs with cattery's packages"
    )
    target = agents_dir / context_hash
    if target.is_dir():
        shutil.rmtree(work)
        on_line(f"The same context was built before: {target}")
    else:
        agents_dir.mkdir(parents=True, exist_ok=True)
        work.rename(target)
        on_line(f"Folder agent ready: {target}")
    return BuildResult(image=str(target.resolve()), size_bytes=_size(target))


_FROM = re.compile(r"^(\s*FROM\s+)(?:--platform=\S+\s+)?(\S+)(.*)$", re.IGNORECASE | re.MULTILINE)


def map_base(text: str, stand_in: str | None, on_line: Log) -> str:
    """``FROM dailyco/pipecat-base...`` replaced by ``stand_in``, when one is configured."""
    if not stand_in:
        return text

    def replace(match: re.Match[str]) -> str:
        if not is_pipecat_base(match.group(2)):
            return match.group(0)
        on_line(f"Using {stand_in} for {match.group(2)} (CATTERY_CONTAINER__PIPECAT_BASE_IMAGE)")
        return f"{match.group(1)}{stand_in}{match.group(3)}"

    return _FROM.sub(replace, text)


def build_with_engine(
    archive: Path,
    *,
    work: Path,
    engine_url: str,
    tag: str,
    dockerfile: str,
    stand_in: str | None,
    timeout: float,
    on_line: Log,
) -> BuildResult:
    """The Dockerfile built into ``tag`` by the engine; ``BuildError`` with the failing step."""
    text = _unpack(archive, work, dockerfile, on_line)
    (work / dockerfile).write_text(map_base(text, stand_in, on_line))
    try:
        with tempfile.TemporaryFile() as context:
            with tarfile.open(fileobj=context, mode="w:gz") as tar:
                tar.add(work, arcname=".")
            context.seek(0)
            size = build_image(
                engine_url,
                context,
                tag=tag,
                dockerfile=dockerfile,
                on_line=on_line,
                timeout=timeout,
            )
    except BuildFailed as exc:
        raise BuildError(f"The image build failed: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    on_line(f"Successfully built {tag}")
    return BuildResult(image=tag, size_bytes=size)
