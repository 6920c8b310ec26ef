"""Following an instance's log file line by line, from a byte offset a restart can resume at.

The instance writes its stdout and stderr to a file, not a pipe, so it keeps running (and
logging) while no control plane reads it. ``offset`` always sits just after the last line
handed to the sink, so a partial line is read again once it is complete.

What has been read is freed on disk (a hole is punched in the file, on Linux): a bot that
prints without end fills no disk, while the file keeps its length and so every offset
stays valid. A hole reads back as NUL bytes, which are never handed over as lines.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
import time
from collections import deque
from pathlib import Path

from loguru import logger

from cattery.backends.base import LineSink

POLL_SECONDS = 0.1
#: read per loop turn while following: a flood is read in small steps
READ_CHUNK = 128 * 1024
#: a "line" this long without a newline is handed over anyway
MAX_LINE_BYTES = 64 * 1024
RECENT_LINES = 50
#: the least rest between two chunks of a flood
MIN_REST_SECONDS = 0.001
#: read bytes are freed once this many have piled up
FREE_EVERY_BYTES = 1 << 20
_BLOCK = 4096
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def _load_fallocate() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fallocate = libc.fallocate
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    return fallocate


_fallocate = _load_fallocate()


def free_range(path: Path, start: int, end: int) -> bool:
    """Free the disk blocks of ``path`` between ``start`` and ``end`` (whole blocks only),
    keeping its length; False where the OS or file system can't."""
    start = -(-start // _BLOCK) * _BLOCK
    end = end // _BLOCK * _BLOCK
    if _fallocate is None or end <= start:
        return False
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        return _fallocate(fd, mode, start, end - start) == 0  # type: ignore[operator]
    finally:
        os.close(fd)


class LogTail:
    """Reads complete lines appended to ``path`` and passes each to ``sink``.

    Owned by one instance handle, which runs ``follow()`` as a task and calls
    ``read_available(final=True)`` once the process has exited, so no line is lost.
    """

    def __init__(self, instance_id: str, path: Path, sink: LineSink, offset: int = 0) -> None:
        self.instance_id = instance_id
        self.path = path
        self.offset = offset
        self._sink = sink
        self.recent: deque[str] = deque(maxlen=RECENT_LINES)
        self._freed = offset
        self._behind = False

    async def follow(self, interval: float = POLL_SECONDS) -> None:
        """Read what was appended every ``interval`` seconds, until cancelled. A flood is
        read a chunk at a time, resting as long as each chunk took: it takes at most half
        of the event loop, and the API keeps answering."""
        while True:
            await self._step(interval)

    async def catch_up(self, *, final: bool = False) -> None:
        """Read to the end of the file, a chunk at a time as ``follow`` does."""
        while await self._step(0.0, final=final):
            pass

    async def _step(self, interval: float, *, final: bool = False) -> bool:
        """Read one chunk, then rest; True while more is waiting."""
        began = time.monotonic()
        self.read_available(final=final, max_chunks=1)
        if self._behind:
            await asyncio.sleep(max(time.monotonic() - began, MIN_REST_SECONDS))
            return True
        await asyncio.sleep(interval)
        return False

    def read_available(self, *, final: bool = False, max_chunks: int | None = None) -> int:
        """Hand every complete line up to the end of the file to the sink; return how many.

        ``final``: the writer is gone, so a last line without a newline is complete too.
        ``max_chunks``: read at most this many chunks now (``_behind`` says if more wait).
        """
        count = 0
        chunks = 0
        self._behind = False
        try:
            with self.path.open("rb") as f:
                while True:
                    if max_chunks is not None and chunks >= max_chunks:
                        self._behind = True
                        return count
                    chunks += 1
                    f.seek(self.offset)
                    data = f.read(READ_CHUNK)
                    if not data:
                        return count
                    at_end = len(data) < READ_CHUNK
                    used, lines = _split_lines(data, flush_rest=final and at_end)
                    if not used:
                        return count
                    self.offset += used
                    for line in lines:
                        self._deliver(line)
                    count += len(lines)
                    if self.offset - self._freed >= FREE_EVERY_BYTES:
                        if free_range(self.path, self._freed, self.offset):
                            self._freed = self.offset
                        else:
                            self._freed = 1 << 62  # the file system can't: stop trying
        except FileNotFoundError:
            return count

    def _deliver(self, line: str) -> None:
        self.recent.append(line)
        try:
            self._sink(self.instance_id, line)
        except Exception as exc:
            logger.opt(exception=exc).error(f"Log line sink failed: {exc!r}")

    def last_lines(self, n: int = 20) -> str:
        return "\n".join(list(self.recent)[-n:])


def _split_lines(data: bytes, *, flush_rest: bool) -> tuple[int, list[str]]:
    """The complete lines at the start of ``data`` and how many bytes they span.

    What follows the last newline is left for the next read, unless ``flush_rest`` (the
    writer is gone) or it has grown past ``MAX_LINE_BYTES``.
    """
    end = data.rfind(b"\n") + 1
    rest = len(data) - end
    if rest and (flush_rest or rest > MAX_LINE_BYTES):
        end = len(data)
    if not end:
        return 0, []
    chunk = data[:end]
    if chunk.endswith(b"\n"):
        chunk = chunk[:-1]
    lines = [
        raw.rstrip(b"\r").decode("utf-8", errors="replace")
        for raw in chunk.split(b"\n")
        if not raw.startswith(b"\0") or raw.strip(b"\0")  # a freed range reads as NULs
    ]
    return end, lines
