"""Writes what the supervisor and the log router learn into the store, a transaction each."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cattery.control.logrouter import LogRecord, Sample
from cattery.control.supervisor import LiveSession
from cattery.store import repositories as repo
from cattery.store.repositories.logs import NewLogLine


class StoreRecorder:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def created(self, live: LiveSession) -> None:
        async with self._sessionmaker.begin() as db:
            session = await repo.create_session(
                db,
                organization_id=live.organization_id,
                agent_id=live.agent_id,
                deployment_id=live.deployment_id,
                session_id=live.id,
                instance_id=live.handle.id,
                transport=live.transport,
            )
            session.cold_start = live.cold_start
            session.created_at = live.created_at

    async def bot_started(self, session_id: str, bot_start_seconds: float) -> None:
        async with self._sessionmaker.begin() as db:
            session = await repo.get_session_by_id(db, session_id)
            if session is not None and session.bot_start_seconds is None:
                await repo.mark_bot_started(
                    db,
                    session_id,
                    bot_start_seconds=bot_start_seconds,
                    cold_start=bool(session.cold_start),
                )

    async def ended(self, session_id: str, end_state: str, when: datetime) -> None:
        async with self._sessionmaker.begin() as db:
            await repo.end_session(db, session_id, end_state, at=when)

    async def write_logs(self, lines: list[LogRecord], samples: list[Sample]) -> None:
        async with self._sessionmaker.begin() as db:
            await repo.append_log_lines(
                db,
                [
                    NewLogLine(
                        organization_id=r.organization_id,
                        agent_id=r.agent_id,
                        deployment_id=r.deployment_id,
                        session_id=r.session_id,
                        instance_id=r.instance_id,
                        ts=r.ts,
                        line=r.line,
                    )
                    for r in lines
                ],
            )
            for s in samples:
                await repo.add_resource_sample(
                    db,
                    s.session_id,
                    cpu_millicores=s.cpu_millicores,
                    memory_bytes=s.memory_bytes,
                    t=s.t,
                )
