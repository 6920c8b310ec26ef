"""Writes what the supervisor, the log router and the backend learn into the store.

Sessions and log lines are written a transaction each. Instances are remembered too, so a
control plane started after a crash can adopt the ones still running: the record of an
instance is written with its session before the session is dispatched, then kept in step
with what the backend owns (status and log offset every few seconds), and deleted once
the backend has let the instance go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cattery.backends.base import InstanceHandle, InstanceStatus, Locator
from cattery.control import latency
from cattery.control.logrouter import LogRecord, Sample
from cattery.control.metrics import ControlMetrics
from cattery.control.supervisor import LiveSession
from cattery.store import repositories as repo
from cattery.store.crypto import SecretBox
from cattery.store.repositories.logs import NewLogLine
from cattery.tasks import OwnedTasks

#: how often the instance records follow the instances (status, log offset, deletion)
INSTANCE_SYNC_SECONDS = 2.0
#: log lines deleted per transaction when pruning
PRUNE_BATCH = 5000
#: statuses a record never takes: a record is deleted when its instance is let go instead
_TERMINAL = frozenset({InstanceStatus.STOPPED, InstanceStatus.FAILED})


class Locating(Protocol):
    """The instances whose records are kept, and where each runs (the backends' router:
    only backends that can adopt instances after a restart have any)."""

    def adoptable(self) -> Iterable[InstanceHandle]: ...

    def locate(self, handle: InstanceHandle) -> Locator | None: ...


@dataclass(frozen=True)
class _Written:
    """What the store holds for one instance, as far as this control plane knows."""

    status: str
    log_offset: int


class InstanceRecorder:
    """Keeps the ``instances`` table in step with the instances the backend owns.

    Owned by the control plane's lifespan; owns its sync task. Writes are serialized by one
    lock, so the periodic sync never races the record written at dispatch. The offset
    stored is the one seen a sync earlier: the log router has flushed the lines before it
    since, so a restart resumes without losing any (it may repeat a few).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        interval: float = INSTANCE_SYNC_SECONDS,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._backends: Locating | None = None
        self._interval = interval
        self._lock = asyncio.Lock()
        self._written: dict[str, _Written] = {}
        self._seen_offsets: dict[str, int] = {}
        self._agent_ids: dict[str, str] = {}  # deployment id -> agent id
        self._tasks = OwnedTasks("instance records")

    def start(self, backends: Locating) -> None:
        """Follow the instances ``backends`` can adopt. Called after start-up recovery, so
        a sync never sees a half-adopted instance."""
        self._backends = backends
        if not self._tasks and not self._tasks.closed:
            self._tasks.spawn(self._sync_task(), "instance_sync_task")

    def track(self, handle: InstanceHandle, locator: Locator) -> None:
        """An instance adopted from its stored ``locator``: keep its record in step from now
        on."""
        self._written[handle.id] = _Written(_status(handle), locator.log_offset)
        self._seen_offsets[handle.id] = locator.log_offset

    @asynccontextmanager
    async def assigning(
        self, handle: InstanceHandle, agent_id: str, session_id: str
    ) -> AsyncIterator[AsyncSession]:
        """A transaction that also stores ``handle`` as serving ``session_id``: one UPDATE
        when a sync wrote its record already, else its INSERT, written with the commit."""
        async with self._lock:
            async with self._sessionmaker.begin() as db:
                yield db
                locator = self._backends.locate(handle) if self._backends else None
                if locator is None:
                    return  # its backend cannot adopt it after a restart: nothing to keep
                status, offset = _status(handle), self._offset_to_store(handle.id)
                if handle.id not in self._written or not await repo.update_instance(
                    db, handle.id, status=status, log_offset=offset, session_id=session_id
                ):
                    self._add(db, handle, locator, agent_id, session_id)
            self._written[handle.id] = _Written(status, offset)

    async def sync(self) -> None:
        """Write new instances, changed statuses and offsets; delete the ones let go.

        A tick with nothing to change does not touch the store.
        """
        if self._backends is None:
            return
        async with self._lock:
            located = {h.id: (h, self._backends.locate(h)) for h in self._backends.adoptable()}
            owned = {i: h for i, (h, where) in located.items() if where is not None}
            now = {i: _Written(_status(h), self._offset_to_store(i)) for i, h in owned.items()}
            new = [
                h for i, h in owned.items() if i not in self._written and h.status not in _TERMINAL
            ]
            changed = {i: w for i, w in now.items() if i in self._written and self._written[i] != w}
            let_go = self._written.keys() - owned.keys()
            if new or changed or let_go:
                async with self._sessionmaker.begin() as db:
                    for handle in new:
                        agent_id = await self._agent_id(db, handle.spec.deployment_id)
                        where = located[handle.id][1]
                        if agent_id is not None and where is not None:
                            await self._upsert(db, handle, where, agent_id, None)
                    for instance_id, written in changed.items():
                        await repo.update_instance(
                            db, instance_id, status=written.status, log_offset=written.log_offset
                        )
                    for instance_id in let_go:
                        await repo.delete_instance(db, instance_id)
                self._written.update({h.id: now[h.id] for h in new})
                self._written.update(changed)
                for instance_id in let_go:
                    del self._written[instance_id]
            self._seen_offsets = {
                i: where.log_offset for i, (_, where) in located.items() if where is not None
            }

    async def aclose(self) -> None:
        """Stop the sync; a last one deletes the records of instances closed meanwhile."""
        await self._tasks.aclose()
        try:
            await self.sync()
        except Exception as exc:
            logger.opt(exception=exc).error("Failed to update the instance records")

    async def _sync_task(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sync()
            except Exception as exc:
                logger.opt(exception=exc).error("Failed to update the instance records")

    def _offset_to_store(self, instance_id: str) -> int:
        return self._seen_offsets.get(instance_id, 0)

    async def _agent_id(self, db: AsyncSession, deployment_id: str) -> str | None:
        if deployment_id not in self._agent_ids:
            deployment = await repo.get_deployment(db, deployment_id)
            if deployment is None:
                return None
            self._agent_ids[deployment_id] = deployment.agent_id
        return self._agent_ids[deployment_id]

    def _add(
        self,
        db: AsyncSession,
        handle: InstanceHandle,
        locator: Locator,
        agent_id: str,
        session_id: str | None,
    ) -> None:
        """The record of an instance not written yet (``_written`` knows which are: only
        this recorder writes them), added to ``db``'s transaction without reading first."""
        repo.add_instance(
            db, self._box, handle.id, self._facts(handle, locator, agent_id, session_id)
        )

    async def _upsert(
        self,
        db: AsyncSession,
        handle: InstanceHandle,
        locator: Locator,
        agent_id: str,
        session_id: str | None,
    ) -> None:
        facts = self._facts(handle, locator, agent_id, session_id)
        await repo.upsert_instance(db, self._box, handle.id, facts)

    def _facts(
        self, handle: InstanceHandle, locator: Locator, agent_id: str, session_id: str | None
    ) -> repo.InstanceFacts:
        return repo.InstanceFacts(
            agent_id=agent_id,
            deployment_id=handle.spec.deployment_id,
            backend=handle.spec.backend,
            address=locator.address,
            token=locator.token,
            status=_status(handle),
            pid=locator.pid,
            log_path=locator.log,
            log_offset=self._offset_to_store(handle.id),
            process_started_at=locator.started_at,
            session_id=session_id,
        )


def _status(handle: InstanceHandle) -> str:
    """The status to store: a terminal one is never stored (the record goes instead)."""
    status = handle.status
    return InstanceStatus.DRAINING.value if status in _TERMINAL else status.value


class StoreRecorder:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        instances: InstanceRecorder,
        metrics: ControlMetrics | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._instances = instances
        self._metrics = metrics

    async def created(self, live: LiveSession) -> None:
        """The session and its instance's record, in one transaction: no session is
        dispatched to an instance a restarted control plane could not find."""
        async with self._instances.assigning(live.handle, live.agent_id, live.id) as db:
            await repo.create_session(
                db,
                organization_id=live.organization_id,
                agent_id=live.agent_id,
                deployment_id=live.deployment_id,
                session_id=live.id,
                instance_id=live.handle.id,
                transport=live.transport,
                cold_start=live.cold_start,
                created_at=live.created_at,
                flush=False,  # written with the commit, with its instance's record
            )

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

    async def ended(
        self, session_id: str, end_state: str, when: datetime, reason: str | None = None
    ) -> None:
        async with self._sessionmaker.begin() as db:
            await repo.end_session(db, session_id, end_state, reason=reason, at=when)

    async def prune_logs(self, retention: timedelta) -> int:
        """Delete stored log lines older than ``retention``, in short transactions."""
        cutoff = datetime.now(UTC) - retention
        total = 0
        while True:
            async with self._sessionmaker.begin() as db:
                deleted = await repo.delete_log_lines_before(db, cutoff, limit=PRUNE_BATCH)
            total += deleted
            if deleted < PRUNE_BATCH:
                return total
            await asyncio.sleep(0)

    async def write_logs(self, lines: list[LogRecord], samples: list[Sample]) -> None:
        updates = latency.collect((r.session_id, r.line) for r in lines)
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
            for session_id, update in updates.items():
                await repo.add_latency(db, session_id, update)
            for s in samples:
                await repo.add_resource_sample(
                    db,
                    s.session_id,
                    cpu_millicores=s.cpu_millicores,
                    memory_bytes=s.memory_bytes,
                    t=s.t,
                )
        if updates and self._metrics is not None:  # once stored: a retried batch counts once
            agents = {r.session_id: r.agent_id for r in lines if r.session_id in updates}
            for session_id, update in updates.items():
                self._metrics.user_bot_latencies(agents[session_id], update.user_bot_latencies)
