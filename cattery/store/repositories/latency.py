"""A session's startup timing and user-to-bot latencies, as its instance logged them."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import Session, SessionLatency


@dataclass
class LatencyUpdate:
    """What one batch of log lines added to a session's latency record."""

    pipeline_startup_seconds: float | None = None
    transport_connected_seconds: float | None = None
    first_bot_speech_seconds: float | None = None
    user_bot_latencies: list[float] = field(default_factory=list)


async def add_latency(db: AsyncSession, session_id: str, update: LatencyUpdate) -> bool:
    """Merge ``update`` into the session's record (created on first use); the first
    startup figures win. False when there is no such session."""
    if await db.get(Session, session_id) is None:
        return False
    row = await db.get(SessionLatency, session_id)
    if row is None:
        row = SessionLatency(session_id=session_id, user_bot_latencies=[])
        db.add(row)
    if row.pipeline_startup_seconds is None:
        row.pipeline_startup_seconds = update.pipeline_startup_seconds
    if row.transport_connected_seconds is None:
        row.transport_connected_seconds = update.transport_connected_seconds
    if row.first_bot_speech_seconds is None:
        row.first_bot_speech_seconds = update.first_bot_speech_seconds
    if update.user_bot_latencies:
        row.user_bot_latencies = [*(row.user_bot_latencies or []), *update.user_bot_latencies]
    await db.flush()
    return True


async def get_latency(db: AsyncSession, session_id: str) -> SessionLatency | None:
    return await db.get(SessionLatency, session_id)
