"""The start journal: a session's start is durable once its line is appended here.

Why: writing a start's record (the session and its instance's record) is a database
transaction, about 2 ms and far more under load, that a start would otherwise wait for
before its instance is told to run the bot. What a control plane writes to a file outlives
the control plane's crash (the page cache is the kernel's, not the process's), which is
the durability the database gives a commit with SQLite's WAL and ``synchronous=NORMAL``.
So a start appends one JSON line with one ``os.write`` (no thread, no flush), the
database's transaction runs beside the dispatch, and a restarted control plane replays
the lines whose session the database lacks before it adopts what a crash left running.

The file stays small: a line is forgotten once its commit succeeded, the file is emptied
when no start is pending once it has grown past ``TRUNCATE_BYTES``, and rewritten with the
pending lines alone when it grows past ``COMPACT_BYTES`` with starts always pending. Lines
of committed starts a restart finds are skipped: their sessions are in the database.

Nothing secret is in clear: an instance's token is kept the way the database keeps it (the
store's ciphertext), and the file is the server's alone (0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from cattery.files import PRIVATE_FILE_MODE

#: the journal's file name in the state dir
JOURNAL_NAME = "starts.journal"
#: past this size the file is emptied once no start is pending (a truncation costs tens
#: of microseconds on ext4: not one per start)
TRUNCATE_BYTES = 64 << 10
#: past this size, with starts still pending, the file is rewritten with those alone
COMPACT_BYTES = 1 << 20


#: the fields of a ``StartRecord`` that are the session's row
_SESSION_COLUMNS = (
    "session_id",
    "organization_id",
    "agent_id",
    "deployment_id",
    "instance_id",
    "transport",
    "cold_start",
    "created_at",
)


@dataclass(frozen=True)
class StartRecord:
    """What a start writes: the session's row and, for an instance a restarted control
    plane can adopt, its record (the ``instances`` columns, token encrypted)."""

    session_id: str
    organization_id: str
    agent_id: str
    deployment_id: str
    instance_id: str | None
    transport: str | None
    cold_start: bool | None
    created_at: datetime
    #: the instance's record as stored (``InstanceFacts.stored``), or None
    instance: dict[str, Any] | None = None

    def session_columns(self) -> dict[str, Any]:
        """The session's row, as ``repositories.create_session`` takes it."""
        return {name: getattr(self, name) for name in _SESSION_COLUMNS}

    def line(self) -> bytes:
        values = {f.name: getattr(self, f.name) for f in _FIELDS}  # asdict copies deeply: slow
        values["created_at"] = self.created_at.isoformat()
        return json.dumps(values, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> StartRecord:
        values = json.loads(line)
        values["created_at"] = datetime.fromisoformat(values["created_at"])
        return cls(**values)


_FIELDS = fields(StartRecord)


class StartJournal:
    """The append-only file of starts not yet committed to the database.

    Used from the event loop only: appends, forgetting and compaction never interleave.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = _open_append(path)
        #: session id -> its line, for the starts whose commit has not succeeded yet
        self._pending: dict[str, bytes] = {}
        self._size = os.fstat(self._fd).st_size

    def append(self, record: StartRecord) -> None:
        """Make ``record`` durable against a crash of this process (one write)."""
        line = record.line()
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: end the torn line so the next one parses
            os.write(self._fd, b"\n")
            raise OSError(f"the start journal {self.path} took {written} of {len(line)} bytes")
        self._pending[record.session_id] = line
        self._size += written

    def pending(self) -> list[str]:
        """The sessions whose start is not in the database yet, oldest first."""
        return list(self._pending)

    def forget(self, session_id: str) -> None:
        """``session_id``'s start is in the database: its line is no longer needed."""
        self._pending.pop(session_id, None)
        if not self._pending:
            if self._size > TRUNCATE_BYTES:
                self.clear()
        elif self._size > COMPACT_BYTES:
            self._compact()

    def records(self) -> list[StartRecord]:
        """Every start on file (a restart's replay): unreadable lines are skipped, loudly."""
        with open(self.path, "rb") as file:
            lines = file.read().splitlines()
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(StartRecord.parse(line))
            except (ValueError, TypeError, KeyError) as exc:
                logger.error(f"Skipping line {number} of the start journal {self.path}: {exc!r}")
        return records

    def clear(self) -> None:
        """Empty the file (its starts are all in the database now)."""
        self._pending.clear()
        os.ftruncate(self._fd, 0)  # O_APPEND: the next line goes at the new end
        self._size = 0

    def close(self) -> None:
        """Stop appending; lines still pending stay on file for the next start-up."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _compact(self) -> None:
        """Rewrite the file with the pending lines only: a new file renamed over the old,
        so a crash meanwhile leaves one of the two, both complete."""
        fresh = self.path.with_name(self.path.name + ".new")
        fd = _open_append(fresh, truncate=True)
        data = b"".join(self._pending.values())
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.replace(fresh, self.path)
        except BaseException:
            os.close(fd)
            raise
        os.close(self._fd)
        self._fd, self._size = fd, len(data)


def _open_append(path: Path, *, truncate: bool = False) -> int:
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd
