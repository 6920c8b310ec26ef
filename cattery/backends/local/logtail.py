"""Following an instance's log file line by line, from a byte offset a restart can resume at.

The instance writes its stdout and stderr to a file, not a pipe, so it keeps running (and
logging) while no control plane reads it. ``offset`` always sits just after the last line
handed to the sink, so a partial line is read again once it is complete.
"""

from __future__ import annotations

import asyncio
from collections import deque
from pathlib import Path

from loguru import logger

from cattery.backends.base import LineSink

POLL_SECONDS = 0.1
READ_CHUNK = 1 << 20
#: a "line" this long without a newline is handed over anyway
MAX_LINE_BYTES = 64 * 1024
RECENT_LINES = 50


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

    async def follow(self, interval: float = POLL_SECONDS) -> None:
        """Read what was appended every ``interval`` seconds, until cancelled."""
        while True:
            self.read_available()
            await asyncio.sleep(interval)

    def read_available(self, *, final: bool = False) -> int:
        """Hand every complete line up to the end of the file to the sink; return how many.

        ``final``: the writer is gone, so a last line without a newline is complete too.
        """
        count = 0
        try:
            with self.path.open("rb") as f:
                while True:
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
    lines = [raw.rstrip(b"\r").decode("utf-8", errors="replace") for raw in chunk.split(b"\n")]
    return end, lines
