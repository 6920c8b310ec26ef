"""An agent folder's own Python environment: a venv of its dependencies, one per lock.

A folder that lists dependencies gets a venv holding exactly them, as the Dockerfiles of
Pipecat's examples install them: ``uv.lock`` (with its ``pyproject.toml``) through
``uv sync --frozen --no-install-project --no-dev``, else ``requirements.txt`` or the
dependencies of ``pyproject.toml`` through ``uv pip install -r``. The project itself is
never installed, so a folder of several modules deploys as it is. The venv's interpreter
runs the agent's instances; a ``.pth`` file puts cattery's own packages on its path *after*
the venv's, so the agent's packages (its own Pipecat, when it lists one) win and cattery's
runtime fills in the rest. No second copy of Pipecat is layered over cattery's.

Venvs live under ``envs_dir/<hash>``, the hash of the dependency files, the interpreter and
cattery's package folders: a second deploy of the same lock reuses it. uv reads its usual
settings from the environment (``UV_INDEX_URL``, ``UV_FIND_LINKS``, ``UV_CACHE_DIR``, ...),
and its output goes to ``progress`` line by line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import site
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uv import find_uv_bin

LOCK_FILE, PYPROJECT, REQUIREMENTS = "uv.lock", "pyproject.toml", "requirements.txt"
COMPLETE_MARKER = ".complete"
PTH_NAME = "_cattery_runtime.pth"
OUTPUT_TAIL_LINES = 8
_locks: dict[str, asyncio.Lock] = {}

Progress = Callable[[str], None]


class EnvironmentBuildFailed(Exception):
    """uv could not build the venv; the message ends with the tail of its output."""


@dataclass(frozen=True)
class DependencySource:
    """What a folder's dependencies are read from: ``kind`` names the file that decides."""

    kind: str
    files: tuple[Path, ...]


def dependency_source(folder: Path) -> DependencySource | None:
    """``uv.lock`` (with ``pyproject.toml``) first, then ``requirements.txt``, then
    ``pyproject.toml``; None for a folder that lists no dependencies."""
    lock, pyproject, requirements = folder / LOCK_FILE, folder / PYPROJECT, folder / REQUIREMENTS
    if lock.is_file() and pyproject.is_file():
        return DependencySource(LOCK_FILE, (pyproject, lock))
    if requirements.is_file():
        return DependencySource(REQUIREMENTS, (requirements,))
    if pyproject.is_file():
        return DependencySource(PYPROJECT, (pyproject,))
    return None


def cattery_site_dirs() -> list[str]:
    """Where this interpreter's packages (cattery's runtime among them) are installed."""
    return [path for path in site.getsitepackages() if Path(path).is_dir()]


def environment_key(source: DependencySource) -> str:
    """The venv's name: the dependency files, the interpreter, and cattery's packages."""
    digest = hashlib.sha256()
    header = [source.kind, sys.version, sys.executable, *cattery_site_dirs()]
    digest.update(json.dumps(header).encode())
    for path in source.files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def environment_dir(envs_dir: Path, source: DependencySource) -> Path:
    """Where the venv of ``source`` lives: an absolute path, whatever ``envs_dir`` is."""
    return Path(os.path.abspath(envs_dir)) / environment_key(source)


def venv_python(target: Path) -> Path:
    return target / "bin" / "python"


def venv_site_packages(target: Path) -> Path:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return target / "lib" / version / "site-packages"


async def build_environment(folder: Path, envs_dir: Path, progress: Progress) -> Path | None:
    """The interpreter of ``folder``'s venv, built now unless an equal one exists; None
    when the folder lists no dependencies (cattery's own interpreter runs it)."""
    source = dependency_source(folder)
    if source is None:
        return None
    target = environment_dir(envs_dir, source)
    lock = _locks.setdefault(str(target), asyncio.Lock())
    async with lock:
        if (target / COMPLETE_MARKER).exists():
            progress(f"Reusing the environment built from {source.kind} ({target})")
            return venv_python(target)
        progress(f"Building the environment from {source.kind} in {target}")
        if target.exists():  # a build that did not finish
            await asyncio.to_thread(shutil.rmtree, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        await _uv(["venv", "--python", sys.executable, str(target)], folder, progress)
        await _install(source, folder, target, progress)
        link_cattery(target)
        (target / COMPLETE_MARKER).touch()
        progress(f"Environment ready: {venv_python(target)}")
        return venv_python(target)


async def _install(
    source: DependencySource, folder: Path, target: Path, progress: Progress
) -> None:
    python = str(venv_python(target))
    if source.kind == LOCK_FILE:
        args = ["sync", "--frozen", "--no-install-project", "--no-dev", "--python", python]
        await _uv(args, folder, progress, UV_PROJECT_ENVIRONMENT=str(target))
    else:
        file = source.files[0].name
        await _uv(["pip", "install", "--python", python, "-r", file], folder, progress)


def link_cattery(target: Path) -> None:
    """Put cattery's package folders on the venv's path, after its own packages."""
    lines = [f"import site; site.addsitedir({path!r})" for path in cattery_site_dirs()]
    (venv_site_packages(target) / PTH_NAME).write_text("\n".join(lines) + "\n")


async def _uv(args: list[str], cwd: Path, progress: Progress, **env: str) -> None:
    """Run uv, passing each line it prints to ``progress``; raise if it fails."""
    full_env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1", **env}
    full_env.pop("VIRTUAL_ENV", None)  # cattery's own, which uv must not touch
    proc = await asyncio.create_subprocess_exec(
        find_uv_bin(),
        *args,
        cwd=cwd,
        env=full_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        if line:
            progress(f"uv: {line}")
            tail = [*tail, line][-OUTPUT_TAIL_LINES:]
    if await proc.wait() != 0:
        raise EnvironmentBuildFailed(f"uv {args[0]} failed: " + " | ".join(tail))
