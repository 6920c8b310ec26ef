"""Writes what the supervisor, the log router and the backend learn into the store.

Sessions and log lines are written a transaction each. Instances are remembered too, so a
control plane started after a crash can adopt the ones still running: the record of an
instance is written with its session (durable in the start journal before the session is
dispatched, committed beside the dispatch), then kept in step with what the backend owns
(status and log offset every few seconds), and deleted once the backend has let the
instance go.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cattery.backends.base import InstanceHandle, InstanceStatus, Locator
from cattery.control import latency
from cattery.control.logrouter import LogRecord, Sample
from cattery.control.metrics import ControlMetrics
from cattery.control.supervisor import LiveSession
from cattery.store import repositories as repo
from cattery.store.crypto import SecretBox
from cattery.store.journal import StartJournal, StartRecord
from cattery.store.repositories.logs import NewLogLine
from cattery.tasks import OwnedTasks

#: how often the instance records follow the instances (status, log offset, deletion)
INSTANCE_SYNC_SECONDS = 2.0
#: log lines deleted per transaction when pruning
PRUNE_BATCH = 5000
#: a start's commit that failed is tried again after this, doubling up to the maximum
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
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
        #: the encrypted tokens of instances waiting in a pool, made before their session
        self._sealed: dict[str, str] = {}
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

    def start_record(
        self, handle: InstanceHandle, agent_id: str, session_id: str
    ) -> dict[str, Any] | None:
        """The record ``assigning`` will write for ``handle``, as the start journal keeps
        it; None when its backend cannot adopt it after a restart (nothing to keep)."""
        locator = self._backends.locate(handle) if self._backends else None
        if locator is None:
            return None
        facts = self._facts(handle, locator, agent_id, session_id)
        return facts.stored(self._box, self._sealed.pop(handle.id, None))

    # The pools' ``InstanceEvents``: an instance's token is encrypted while it waits (an
    # encryption on a start's path costs ~0.2 ms when the process was idle a moment).

    def instance_idle(self, handle: InstanceHandle) -> None:
        if handle.id not in self._sealed:
            self._sealed[handle.id] = self._box.encrypt(handle.token)

    def instance_gone(self, handle: InstanceHandle) -> None:
        self._sealed.pop(handle.id, None)

    @asynccontextmanager
    async def assigning(
        self, handle: InstanceHandle, record: dict[str, Any] | None, *, again: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A transaction that also stores ``handle`` as serving the session ``record``
        names (``start_record``'s): one UPDATE when its record is written already, else
        its INSERT, written with the commit. ``again``: an earlier attempt may have been
        committed after all, so the UPDATE is tried first."""
        async with self._lock:
            async with self._sessionmaker.begin() as db:
                yield db
                if record is None:
                    return  # its backend cannot adopt it after a restart: nothing to keep
                status, offset = _status(handle), self._offset_to_store(handle.id)
                known = again or handle.id in self._written
                if not known or not await repo.update_instance(
                    db,
                    handle.id,
                    status=status,
                    log_offset=offset,
                    session_id=record["session_id"],
                ):
                    record = {**record, "status": status, "log_offset": offset}
                    repo.add_instance_record(db, handle.id, record)
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


@dataclass
class _Start:
    """A journaled start whose commit has not succeeded yet."""

    record: StartRecord
    handle: InstanceHandle
    #: set once the first attempt is over: True when committed, False when it failed (the
    #: attempts go on) or was cancelled (the line waits for the next start-up's replay)
    committed: asyncio.Future[bool]
    #: writes about the session that came while its record was not in the database,
    #: made in order once it is
    after: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


class StoreRecorder:
    """Sessions, their log lines and their instances' records, into the store.

    A start is durable once ``created`` returns: its line is in the start journal. Its
    commit runs as an owned task beside the dispatch; every later write about the session
    (its bot's start, its end, its samples) waits for that commit, so none lands before
    the session's row. A commit that fails is logged and retried from the journal's
    record; writes that came meanwhile are made after it.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        instances: InstanceRecorder,
        journal: StartJournal,
        metrics: ControlMetrics | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._instances = instances
        self._journal = journal
        self._metrics = metrics
        self._pending: dict[str, _Start] = {}
        self._tasks = OwnedTasks("start records")

    def created(self, live: LiveSession) -> asyncio.Future[bool]:
        """Journal the session and its instance's record (durable when this returns: no
        session is dispatched to an instance a restarted control plane could not find),
        and commit them to the database in a task; the future is that commit's outcome."""
        record = StartRecord(
            session_id=live.id,
            organization_id=live.organization_id,
            agent_id=live.agent_id,
            deployment_id=live.deployment_id,
            instance_id=live.handle.id,
            transport=live.transport,
            cold_start=live.cold_start,
            created_at=live.created_at,
            instance=self._instances.start_record(live.handle, live.agent_id, live.id),
        )
        self._journal.append(record)
        start = _Start(record, live.handle, asyncio.get_running_loop().create_future())
        self._pending[live.id] = start
        self._tasks.spawn(self._commit(start), "start_record_task")
        return start.committed

    async def aclose(self) -> None:
        """Stop committing: starts still pending stay in the journal for the next start-up."""
        await self._tasks.aclose()
        self._journal.close()

    async def _commit(self, start: _Start) -> None:
        session_id = start.record.session_id
        try:
            await asyncio.sleep(0)  # the dispatch goes out first; the instance works meanwhile
            attempt = 0
            while not await self._wrote_start(start, again=attempt > 0):
                if not start.committed.done():
                    start.committed.set_result(False)
                await asyncio.sleep(min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2**attempt))
                attempt += 1
        finally:  # cancelled (shutting down): the line waits for the next start-up
            if session_id in self._pending and not start.committed.done():
                start.committed.set_result(False)
        for write in start.after:
            try:
                await write()
            except Exception as exc:
                logger.bind(session_id=session_id).opt(exception=exc).error(
                    "Failed to store a write about a session made while its start was not"
                )

    async def _wrote_start(self, start: _Start, *, again: bool) -> bool:
        """One attempt at committing ``start``; once it succeeded, it is forgotten."""
        session_id = start.record.session_id
        try:
            await self._write_start(start, again=again)
        except Exception as exc:
            logger.bind(session_id=session_id).opt(exception=exc).error(
                "Failed to store a session's start; it is kept in the start journal "
                "and written again"
            )
            return False
        del self._pending[session_id]
        self._journal.forget(session_id)
        if not start.committed.done():
            start.committed.set_result(True)
        return True

    async def _write_start(self, start: _Start, *, again: bool) -> None:
        record = start.record
        async with self._instances.assigning(start.handle, record.instance, again=again) as db:
            if again and await repo.get_session_by_id(db, record.session_id) is not None:
                return  # an earlier attempt was committed after all
            # written with the commit, with its instance's record
            await repo.create_session(db, **record.session_columns(), flush=False)

    async def _pending_after_commit(self, session_id: str) -> _Start | None:
        """Wait for the commit of ``session_id``'s start; its pending start when that
        commit has not succeeded (a write then goes in its ``after``), else None."""
        start = self._pending.get(session_id)
        if start is None:
            return None
        await asyncio.shield(start.committed)
        return self._pending.get(session_id)

    async def bot_started(self, session_id: str, bot_start_seconds: float) -> None:
        start = await self._pending_after_commit(session_id)
        if start is not None:
            start.after.append(partial(self._bot_started, session_id, bot_start_seconds))
            return
        await self._bot_started(session_id, bot_start_seconds)

    async def _bot_started(self, session_id: str, bot_start_seconds: float) -> None:
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
        start = await self._pending_after_commit(session_id)
        if start is not None:
            start.after.append(partial(self._ended, session_id, end_state, when, reason))
            return
        await self._ended(session_id, end_state, when, reason)

    async def _ended(
        self, session_id: str, end_state: str, when: datetime, reason: str | None
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
        sessions = {r.session_id for r in lines} | {s.session_id for s in samples}
        missing: set[str] = set()
        for session_id in sessions & self._pending.keys():
            if await self._pending_after_commit(session_id) is not None:
                missing.add(session_id)  # its row is not written yet: its samples wait
        samples = [s for s in samples if s.session_id not in missing]
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
