"""After a crash: take back what a killed control plane left running, settle the rest.

Runs in the lifespan before the app serves and before the pools are rebuilt. For every
instance still on record:

- it still runs and serves a session that has not ended: the instance is adopted, its
  agent's pool counts it as busy, and the supervisor watches the session as a live one;
- it runs but serves nothing (a warm instance, or one whose session ended): it is closed
  (idle instances exit once their owner is gone anyway; this makes sure);
- it is gone: its session, if still open, ends with the end state its last lines name,
  else ``terminated``; the lines it wrote meanwhile are stored.

First of all, the starts the start journal holds whose session the database lacks (the
control plane died between a start's line and its commit) are written to the database, so
their sessions and instances are settled like the others; then the journal is emptied.

Finding an instance again is its backend's work (``Adopting``, asked through the backends'
router by the name on the record): this module knows no backend. A session left open
whose instance is not on record ends the same way. Afterwards every instance the store
knew of has an owner again, or is gone.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.backends.base import Adoption, InstanceHandle, InstanceSpec, Locator
from cattery.control.logrouter import END_STATE, InstanceContext
from cattery.control.state import ControlState
from cattery.control.supervisor import LOGGED_END_STATES
from cattery.store import repositories as repo
from cattery.store.crypto import DecryptionError
from cattery.store.journal import StartRecord
from cattery.store.models import EndState, Instance, Session

#: how long an idle instance found after a crash gets to exit before it is killed
IDLE_CLOSE_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class OpenSession:
    """A session the store still has open, with what reattaching it needs (no ORM rows)."""

    id: str
    organization_id: str
    agent_id: str
    agent_key: str
    deployment_id: str
    instance_id: str | None
    created_at: datetime
    cold_start: bool
    transport: str | None
    max_session_seconds: int

    def context(self) -> InstanceContext:
        return InstanceContext(self.organization_id, self.agent_id, self.deployment_id, self.id)


@dataclass(frozen=True)
class FoundInstance:
    """An instance on record: the backend that made it, where it runs, and the open session
    it serves."""

    instance_id: str
    backend: str
    spec: InstanceSpec
    locator: Locator
    session: OpenSession | None


@dataclass
class Recovery:
    """What recovery did, for the start-up log line."""

    adopted: int = 0
    closed: int = 0
    ended: int = 0
    #: starts found in the journal only
    replayed: int = 0


async def replay_journal(state: ControlState) -> int:
    """Write the journal's starts missing from the database (a session, its instance's
    record), then empty the journal; how many were missing."""
    records = state.journal.records()
    replayed = 0
    if records:
        async with state.sessionmaker.begin() as db:
            for record in records:
                replayed += await _replay(db, record)
    state.journal.clear()
    return replayed


async def _replay(db: AsyncSession, record: StartRecord) -> int:
    if await repo.get_session_by_id(db, record.session_id) is not None:
        return 0  # committed before the crash
    log = logger.bind(session_id=record.session_id)
    if await repo.get_deployment(db, record.deployment_id) is None:
        log.error("A journaled start's deployment is gone; its session is not recorded")
        return 0
    log.warning("Session's start was journaled but not committed before the restart")
    await repo.create_session(db, **record.session_columns())
    if record.instance is not None and record.instance_id is not None:
        if not await repo.update_instance(db, record.instance_id, session_id=record.session_id):
            repo.add_instance_record(db, record.instance_id, record.instance)
            await db.flush()
    return 1


async def recover(state: ControlState) -> Recovery:
    """Adopt, close or settle every instance and open session the store holds."""
    done = Recovery(replayed=await replay_journal(state))
    async with state.sessionmaker() as db:
        found, open_sessions = await _load(db, state)
    backends = state.backends
    end_states: dict[str, str] = {}
    forget: list[str] = []
    idle: list[InstanceHandle] = []
    for item in found:
        session = item.session
        if session is not None:
            open_sessions.pop(session.id, None)
            state.router.bind(item.instance_id, session.context())
        adoption: Adoption = await backends.adopt(
            item.backend, item.instance_id, item.spec, item.locator
        )
        handle = adoption.handle
        if handle is not None and session is not None and handle.token:
            _reattach(state, handle, session, item.locator)
            done.adopted += 1
            continue
        forget.append(item.instance_id)
        if handle is not None:
            idle.append(handle)  # serves nothing, or nothing can talk to it: closed
        if session is not None:
            gone = handle is None  # its last lines tell how it ended
            logged = _last_end_state(adoption.last_lines) if gone else None
            end_states[session.id] = logged or EndState.TERMINATED.value
    for session in open_sessions.values():
        lines = await backends.last_lines(session.instance_id) if session.instance_id else ()
        end_states[session.id] = _last_end_state(lines) or EndState.TERMINATED.value
    done.closed = len(idle)
    await asyncio.gather(*(h.aclose(grace=IDLE_CLOSE_GRACE_SECONDS) for h in idle))
    async with state.sessionmaker.begin() as db:
        for instance_id in forget:
            await repo.delete_instance(db, instance_id)
        for session_id, end_state in end_states.items():
            logger.bind(session_id=session_id).warning(
                f"Session's instance did not outlive the restart; recording it as {end_state}"
            )
            done.ended += await repo.end_session(db, session_id, end_state)
    return done


def _reattach(
    state: ControlState, handle: InstanceHandle, session: OpenSession, locator: Locator
) -> None:
    state.pools.adopt_busy(session.agent_key, handle)
    state.instances.track(handle, locator)
    state.supervisor.reattach(
        session_id=session.id,
        organization_id=session.organization_id,
        agent_id=session.agent_id,
        agent_key=session.agent_key,
        deployment_id=session.deployment_id,
        handle=handle,
        cold_start=session.cold_start,
        created_at=session.created_at,
        release=partial(state.pools.release, session.agent_key),
        max_session_seconds=session.max_session_seconds,
        transport=session.transport,
    )
    logger.bind(session_id=session.id, instance_id=handle.id).info(
        "Reattached a session that outlived the previous control plane"
    )


def _last_end_state(lines: tuple[str, ...]) -> str | None:
    for line in reversed(lines):
        match = END_STATE.search(line)
        if match is not None and match.group(1) in LOGGED_END_STATES:
            return match.group(1)
    return None


# -- reading the store ---------------------------------------------------------------


async def _load(
    db: AsyncSession, state: ControlState
) -> tuple[list[FoundInstance], dict[str, OpenSession]]:
    """Instances on record and open sessions, as plain data."""
    names: dict[str, str] = {}  # agent id -> "<org>/<agent>"
    limits: dict[str, int] = {}  # deployment id -> max session seconds
    sessions: dict[str, OpenSession] = {}
    for row in await repo.list_unended_sessions(db):
        sessions[row.id] = await _open_session(db, row, names, limits)
    found = []
    for row in await repo.list_live_instances(db):
        session = sessions.get(row.session_id) if row.session_id else None
        spec = await _stored_spec(db, row, names)
        found.append(FoundInstance(row.id, row.backend, spec, _locator(state, row), session))
    return found, sessions


async def _open_session(
    db: AsyncSession, row: Session, names: dict[str, str], limits: dict[str, int]
) -> OpenSession:
    if row.deployment_id not in limits:
        deployment = await repo.get_deployment(db, row.deployment_id)
        limits[row.deployment_id] = (
            deployment.max_session_duration
            if deployment is not None
            else repo.DEFAULT_MAX_SESSION_DURATION
        )
    return OpenSession(
        id=row.id,
        organization_id=row.organization_id,
        agent_id=row.agent_id,
        agent_key=await _agent_key(db, row.agent_id, names),
        deployment_id=row.deployment_id,
        instance_id=row.instance_id,
        created_at=row.created_at,
        cold_start=bool(row.cold_start),
        transport=row.transport,
        max_session_seconds=limits[row.deployment_id],
    )


async def _agent_key(db: AsyncSession, agent_id: str, names: dict[str, str]) -> str:
    if agent_id not in names:
        agent = await repo.get_agent_by_id(db, agent_id)
        org = await repo.get_organization(db, agent.organization_id) if agent else None
        names[agent_id] = f"{org.name}/{agent.name}" if agent and org else agent_id
    return names[agent_id]


async def _stored_spec(db: AsyncSession, row: Instance, names: dict[str, str]) -> InstanceSpec:
    """The instance's spec as far as the store knows it (its secrets are not stored)."""
    deployment = await repo.get_deployment(db, row.deployment_id)
    return InstanceSpec(
        agent_key=await _agent_key(db, row.agent_id, names),
        deployment_id=row.deployment_id,
        image=deployment.image if deployment is not None else "",
        profile=deployment.agent_profile if deployment is not None else "agent-1x",
        backend=row.backend,
    )


def _locator(state: ControlState, row: Instance) -> Locator:
    try:
        token = repo.instance_token(state.box, row)
    except DecryptionError:
        logger.bind(instance_id=row.id).error("Instance token does not decrypt with this key")
        token = ""  # adopted only to be closed: nothing can talk to it
    return Locator(
        address=row.address,
        token=token,
        pid=row.pid,
        started_at=row.process_started_at,
        log=row.log_path,
        log_offset=row.log_offset,
    )
