"""The local backend's side of adoption: an instance's stored locator is its process (pid
and start time), its port and its log file; a gone instance's story is in that file."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from cattery.backends.base import InstanceSpec, LineSink, Locator
from cattery.backends.local.handle import LocalInstanceHandle
from cattery.backends.local.logtail import LogTail
from cattery.backends.local.record import AdoptRecord

#: lines of a gone instance's log handed back to tell how its session ended
LAST_LINES = 200


def locator_of(handle: LocalInstanceHandle) -> Locator:
    record = handle.record()
    return Locator(
        address=handle.address,
        token=record.token,
        pid=record.pid,
        started_at=record.create_time,
        log=str(record.log_path),
        log_offset=record.log_offset,
    )


def record_from(instance_id: str, spec: InstanceSpec, locator: Locator) -> AdoptRecord | None:
    """The record to find the process by; None when the locator cannot name one."""
    port = urlsplit(locator.address).port
    if locator.pid is None or locator.started_at is None or not locator.log or port is None:
        return None
    return AdoptRecord(
        instance_id=instance_id,
        pid=locator.pid,
        port=port,
        token=locator.token,
        log_path=Path(locator.log),
        log_offset=locator.log_offset,
        spec=spec,
        create_time=locator.started_at,
    )


def replay(instance_id: str, log: Path, offset: int, sink: LineSink) -> tuple[str, ...]:
    """Hand ``sink`` what a gone instance wrote after ``offset``; its last lines."""
    last: deque[str] = deque(maxlen=LAST_LINES)

    def keep(instance_id: str, line: str) -> None:
        last.append(line)
        sink(instance_id, line)

    LogTail(instance_id, log, keep, offset=offset).read_available(final=True)
    return tuple(last)


def read_last_lines(log: Path) -> tuple[str, ...]:
    """The last lines of a log file (none if it is not there), storing nothing."""
    last: deque[str] = deque(maxlen=LAST_LINES)
    if log.is_file():
        LogTail("", log, lambda _, line: last.append(line)).read_available(final=True)
    return tuple(last)
