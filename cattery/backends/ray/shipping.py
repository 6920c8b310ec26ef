"""Agents' code travels to nodes as a tar archive named by its content hash.

The control plane packs a folder once per content (``Packer``), puts it in Ray's object
store once per hash, and each node unpacks it once into ``bundles/<hash>/`` (``unpack``):
no node needs a shared filesystem, and an unchanged folder is never shipped twice.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

#: never shipped: local environments, caches and version control
SKIPPED_DIRS = frozenset({".venv", "venv", "__pycache__", ".git", ".mypy_cache", ".ruff_cache"})
SKIPPED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Bundle:
    """A folder's files as a deterministic tar archive, and the hash naming them."""

    digest: str
    data: bytes = field(repr=False)


def _files(folder: Path) -> list[Path]:
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if not name.endswith(SKIPPED_SUFFIXES):
                found.append(Path(root) / name)
    return found


def _signature(folder: Path, files: list[Path]) -> tuple:
    """Cheap to compute: names, sizes and modification times; a change repacks."""
    out = []
    for path in files:
        stat = path.stat()
        out.append((str(path.relative_to(folder)), stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def pack(folder: Path) -> Bundle:
    """The archive of ``folder`` (owner, times and modes normalised: the same content
    always gives the same hash)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in _files(folder):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(folder)))
            if not info.isfile():
                continue
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    data = buffer.getvalue()
    return Bundle(hashlib.sha256(data).hexdigest()[:32], data)


class Packer:
    """Packs each folder once while it is unchanged."""

    def __init__(self) -> None:
        self._packed: dict[Path, tuple[tuple, Bundle]] = {}

    def pack(self, folder: Path) -> Bundle:
        folder = folder.resolve()
        signature = _signature(folder, _files(folder))
        cached = self._packed.get(folder)
        if cached is not None and cached[0] == signature:
            return cached[1]
        bundle = pack(folder)
        self._packed[folder] = (signature, bundle)
        return bundle

    def pack_image(self, image: str) -> tuple[Bundle, str]:
        """An instance's ``image`` (its bot's folder, or its bot.py): the folder's bundle,
        and the file's name ("" for a folder)."""
        path = Path(image)
        if path.is_dir():
            return self.pack(path), ""
        return self.pack(path.parent), path.name


def unpack(data: bytes, digest: str, bundles_dir: Path) -> Path:
    """``bundles_dir/<digest>``, unpacked from ``data`` unless it is there already.
    Readable by every user: instances may run as their organization's own."""
    target = bundles_dir / digest
    if target.is_dir():
        return target
    bundles_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(bundles_dir, 0o755)
    staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=bundles_dir))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            tar.extractall(staging, filter="data")
        for root, dirs, _ in os.walk(staging):
            for name in dirs:
                os.chmod(Path(root) / name, 0o755)
        os.chmod(staging, 0o755)
        try:
            staging.rename(target)
        except OSError:  # another unpack won the race
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
