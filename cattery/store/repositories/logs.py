"""Instance output, one row per line, read back the way ``agent logs`` asks for it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import LogLine
from cattery.store.types import utcnow


@dataclass(frozen=True)
class NewLogLine:
    """A line to store; ``ts`` defaults to when it was built, close to when it was printed."""

    organization_id: str
    agent_id: str
    line: str
    deployment_id: str | None = None
    session_id: str | None = None
    instance_id: str | None = None
    ts: datetime = field(default_factory=utcnow)


_FIELDS = tuple(f.name for f in fields(NewLogLine))


def _row(line: NewLogLine) -> dict[str, object]:
    """The line's columns; shallow (``asdict`` deep-copies, a cost per line of a flood)."""
    return {name: getattr(line, name) for name in _FIELDS}


async def append_log_lines(db: AsyncSession, lines: Iterable[NewLogLine]) -> int:
    """Store a batch of lines in one statement; returns how many."""
    rows = [_row(line) for line in lines]
    if rows:
        await db.execute(insert(LogLine.__table__), rows)  # Core: no ORM work per row
    return len(rows)


async def list_log_lines(
    db: AsyncSession,
    agent_id: str,
    *,
    session_id: str | None = None,
    deployment_id: str | None = None,
    limit: int = 100,
) -> list[LogLine]:
    """The agent's last ``limit`` matching lines, newest last."""
    query = select(LogLine).where(LogLine.agent_id == agent_id)
    if session_id is not None:
        query = query.where(LogLine.session_id == session_id)
    if deployment_id is not None:
        query = query.where(LogLine.deployment_id == deployment_id)
    newest_first = await db.scalars(query.order_by(LogLine.id.desc()).limit(limit))
    return list(newest_first)[::-1]


async def delete_log_lines_before(db: AsyncSession, cutoff: datetime, *, limit: int = 5000) -> int:
    """Delete up to ``limit`` of the oldest lines stored before ``cutoff``; returns how many
    (call again while it returns ``limit``: each call is one short transaction)."""
    oldest = select(LogLine.id).where(LogLine.ts < cutoff).order_by(LogLine.id).limit(limit)
    result = await db.execute(delete(LogLine).where(LogLine.id.in_(oldest)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def list_session_log_lines_after(
    db: AsyncSession, session_id: str, after_id: int = 0, limit: int = 500
) -> list[LogLine]:
    """The session's lines stored after line ``after_id``, oldest first: a tail to follow."""
    query = (
        select(LogLine)
        .where(LogLine.session_id == session_id, LogLine.id > after_id)
        .order_by(LogLine.id)
        .limit(limit)
    )
    return list(await db.scalars(query))
