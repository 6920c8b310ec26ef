"""Sessions and their resource samples: what ``agent sessions`` reports.

Ending is a single conditional UPDATE, so the first of "bot returned", "stopped" and
"timed out" wins and later ones cannot overwrite its end state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import EndState, ResourceSample, Session
from cattery.store.types import utcnow

#: the pseudo end state the CLI filters on for sessions still running
ACTIVE = "active"
#: a session's end reason is a sentence, never a log dump
END_REASON_MAX = 1000


async def create_session(
    db: AsyncSession,
    *,
    organization_id: str,
    agent_id: str,
    deployment_id: str,
    session_id: str | None = None,
    instance_id: str | None = None,
    transport: str | None = None,
    cold_start: bool | None = None,
    created_at: datetime | None = None,
    flush: bool = True,
) -> Session:
    """Record a session before it is dispatched; ``session_id`` defaults to a new UUID4.

    ``flush=False`` leaves the INSERT to the commit (the caller gave the id): a start's
    record is then written in one round with its instance's.
    """
    session = Session(
        organization_id=organization_id,
        agent_id=agent_id,
        deployment_id=deployment_id,
        instance_id=instance_id,
        transport=transport,
        cold_start=cold_start,
        events=[],
    )
    if session_id is not None:
        session.id = session_id
    if created_at is not None:
        session.created_at = created_at
    db.add(session)
    if flush:
        await db.flush()
    return session


async def get_session(
    db: AsyncSession, organization_id: str, agent_id: str, session_id: str
) -> Session | None:
    """The session, only if it belongs to this organization's agent."""
    session = await db.get(Session, session_id)
    if session is None or session.organization_id != organization_id:
        return None
    return session if session.agent_id == agent_id else None


async def get_session_by_id(db: AsyncSession, session_id: str) -> Session | None:
    """For internal callers (instance reports, recovery) that already trust the id."""
    return await db.get(Session, session_id)


async def list_sessions(
    db: AsyncSession, agent_id: str, *, end_state: str | None = None, limit: int | None = 100
) -> list[Session]:
    """The agent's sessions, newest first; ``end_state="active"`` means not ended yet."""
    query = select(Session).where(Session.agent_id == agent_id)
    if end_state == ACTIVE:
        query = query.where(Session.ended_at.is_(None))
    elif end_state is not None:
        query = query.where(Session.end_state == end_state)
    query = query.order_by(Session.created_at.desc(), Session.id)
    if limit is not None:
        query = query.limit(limit)
    return list(await db.scalars(query))


async def mark_bot_started(
    db: AsyncSession,
    session_id: str,
    *,
    bot_start_seconds: float,
    cold_start: bool,
    instance_id: str | None = None,
    at: datetime | None = None,
) -> bool:
    """Record that ``bot()`` is running; False if the session already started or ended."""
    values: dict[str, Any] = {
        "bot_started_at": at or utcnow(),
        "bot_start_seconds": bot_start_seconds,
        "cold_start": cold_start,
    }
    if instance_id is not None:
        values["instance_id"] = instance_id
    where = (Session.id == session_id, Session.bot_started_at.is_(None), Session.ended_at.is_(None))
    return await _update_session(db, where, values)


async def end_session(
    db: AsyncSession,
    session_id: str,
    end_state: EndState | str,
    *,
    completion_status: str | None = None,
    reason: str | None = None,
    at: datetime | None = None,
) -> bool:
    """End the session unless it already ended; True if this call ended it."""
    values = {
        "ended_at": at or utcnow(),
        "end_state": EndState(end_state).value,
        "completion_status": completion_status,
        "end_reason": reason[:END_REASON_MAX] if reason else None,
    }
    return await _update_session(db, (Session.id == session_id, Session.ended_at.is_(None)), values)


async def _update_session(
    db: AsyncSession, where: tuple[ColumnElement[bool], ...], values: dict[str, Any]
) -> bool:
    """One conditional UPDATE; loaded copies of the row are refreshed from RETURNING."""
    updated = await db.scalars(
        update(Session).where(*where).values(**values).returning(Session),
        execution_options={"populate_existing": True},
    )
    return updated.one_or_none() is not None


async def add_session_event(
    db: AsyncSession, session: Session, event_code: str, at: datetime | None = None
) -> None:
    """Append ``{eventCode, eventTs}`` to the session's event list."""
    event = {"eventCode": event_code, "eventTs": (at or utcnow()).isoformat()}
    session.events = [*session.events, event]  # a new list, so the change is seen
    await db.flush()


async def list_unended_sessions(db: AsyncSession) -> list[Session]:
    """Sessions of every organization still open: settled after a control-plane restart."""
    query = select(Session).where(Session.ended_at.is_(None)).order_by(Session.created_at)
    return list(await db.scalars(query))


async def count_active_sessions(db: AsyncSession, agent_id: str) -> int:
    """How many of the agent's sessions have not ended (``activeSessionCount``)."""
    query = (
        select(func.count())
        .select_from(Session)
        .where(Session.agent_id == agent_id, Session.ended_at.is_(None))
    )
    return int(await db.scalar(query) or 0)


async def add_resource_sample(
    db: AsyncSession,
    session_id: str,
    cpu_millicores: float,
    memory_bytes: int,
    t: datetime | None = None,
) -> ResourceSample:
    sample = ResourceSample(
        session_id=session_id,
        t=t or utcnow(),
        cpu_millicores=cpu_millicores,
        memory_bytes=memory_bytes,
    )
    db.add(sample)
    await db.flush()
    return sample


async def list_resource_samples(db: AsyncSession, session_id: str) -> list[ResourceSample]:
    """The session's samples, oldest first (a timeseries)."""
    query = (
        select(ResourceSample)
        .where(ResourceSample.session_id == session_id)
        .order_by(ResourceSample.t, ResourceSample.id)
    )
    return list(await db.scalars(query))


async def list_organization_sessions(
    db: AsyncSession,
    organization_id: str,
    *,
    end_state: str | None = None,
    since: datetime | None = None,
    agent_id: str | None = None,
    limit: int = 100,
) -> list[Session]:
    """The organization's sessions, newest first: started since ``since``, of one agent,
    with one end state (``"active"``: not ended yet)."""
    query = select(Session).where(Session.organization_id == organization_id)
    if agent_id is not None:
        query = query.where(Session.agent_id == agent_id)
    if since is not None:
        query = query.where(Session.created_at >= since)
    if end_state == ACTIVE:
        query = query.where(Session.ended_at.is_(None))
    elif end_state is not None:
        query = query.where(Session.end_state == end_state)
    query = query.order_by(Session.created_at.desc(), Session.id).limit(limit)
    return list(await db.scalars(query))
