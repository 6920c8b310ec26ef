"""Calls that take an instance as they arrive, and their refusals.

A carrier's media stream, a generic client and a WhatsApp call each take an instance from
the agent's pool when they arrive, and their session's lifetime is a connection to it
(``SessionSupervisor.bridge``). A call that finds the pool full (``AtCapacity``, which
goes on to the caller to refuse in its own way: a WebSocket close, an HTTP 429) is
recorded as a session that ended before its bot started, so the agent's session list
shows the calls it missed; so is a dial-in, whose session is an ordinary start.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.backends.base import InstanceFailed
from cattery.control.api.private.services import agent_key, get_agent
from cattery.control.state import ControlState
from cattery.control.supervisor import Connect, LiveSession, NewSession
from cattery.errors import (
    AgentNotFound,
    AtCapacity,
    CatteryError,
    InvalidRequest,
    ServiceUnavailable,
)
from cattery.pools.pool import Pool
from cattery.store import repositories as repo
from cattery.store.models import Agent, Deployment, EndState, Organization


@dataclass(frozen=True)
class Target:
    """The agent a call is for, and the pool its instance comes from."""

    organization_id: str
    agent_id: str
    deployment_id: str
    agent_key: str
    max_session_seconds: int
    pool: Pool


async def resolve(state: ControlState, service_host: str) -> Target:
    """The agent ``AGENT.ORG`` names, once its deployment is ready to take calls."""
    agent_name, _, org_name = service_host.partition(".")
    if not agent_name or not org_name:
        raise InvalidRequest(f"serviceHost must be AGENT.ORG, not {service_host!r}")
    async with state.sessionmaker() as db:
        org = await repo.get_organization_by_name(db, org_name)
        if org is None:
            raise AgentNotFound(f"Agent {service_host!r} not found")
        agent = await get_agent(db, org, agent_name)
        dep = await _deployment(db, agent)
    return await _ready(state, org, agent, dep)


async def agent_target(
    state: ControlState, db: AsyncSession, org: Organization, agent: Agent
) -> Target:
    """``agent``'s target, once its deployment is ready; ``db`` is committed before the wait,
    so a call waiting for a deployment holds no database connection."""
    dep = await _deployment(db, agent)
    await db.commit()
    return await _ready(state, org, agent, dep)


async def _deployment(db: AsyncSession, agent: Agent) -> Deployment:
    if agent.active_deployment_id is None:
        raise ServiceUnavailable(f"Agent {agent.name!r} has no deployment")
    dep = await repo.get_deployment(db, agent.active_deployment_id)
    assert dep is not None
    return dep


async def _ready(state: ControlState, org: Organization, agent: Agent, dep: Deployment) -> Target:
    status = await state.deployer.wait(dep.id)
    if status.errors:
        error = status.errors[0]["message"]
        raise ServiceUnavailable(f"Agent {agent.name!r} is not ready: {error}")
    key = agent_key(org, agent.name)
    pool = state.pools.get(key)
    if pool is None:
        raise ServiceUnavailable(f"Agent {agent.name!r} is not ready")
    return Target(
        organization_id=org.id,
        agent_id=agent.id,
        deployment_id=dep.id,
        agent_key=key,
        max_session_seconds=dep.max_session_duration,
        pool=pool,
    )


async def place(
    state: ControlState,
    target: Target,
    *,
    connect: Connect,
    transport: str,
    session_id: str | None = None,
    requested_at: float,
) -> LiveSession:
    """A session on an instance from the target's pool, run by ``connect``; ``AtCapacity``
    when the pool has none (recorded as a session under ``session_id``, or a new id)."""
    session_id = session_id or str(uuid.uuid4())
    try:
        lease = await target.pool.acquire()
    except AtCapacity:
        await record_refused(state, target, session_id, transport)
        raise
    except InstanceFailed as exc:
        await record_refused(state, target, session_id, transport)
        raise CatteryError(f"The agent's instance failed to start: {exc}") from exc
    try:
        new = NewSession(
            organization_id=target.organization_id,
            agent_id=target.agent_id,
            agent_key=target.agent_key,
            deployment_id=target.deployment_id,
            handle=lease.handle,
            cold_start=lease.cold_start,
            release=target.pool.release,
            max_session_seconds=target.max_session_seconds,
            transport=transport,
            session_id=session_id,
            requested_at=requested_at,
        )
        return await state.supervisor.bridge(new, connect=connect)
    except BaseException:
        await target.pool.release(lease.handle)
        raise


async def record_refused(
    state: ControlState, target: Target | Agent, session_id: str, transport: str
) -> None:
    """A call the pool had no instance for: a session that ended before its bot started.

    Never raises: the caller is refusing the call already, and that must still happen.
    """
    if isinstance(target, Agent):
        ids = (target.organization_id, target.id, target.active_deployment_id)
    else:
        ids = (target.organization_id, target.agent_id, target.deployment_id)
    if ids[2] is None:
        return
    logger.warning(f"Call refused: no instance; recorded as session {session_id}")
    try:
        async with state.sessionmaker.begin() as db:
            await repo.create_session(
                db,
                organization_id=ids[0],
                agent_id=ids[1],
                deployment_id=ids[2],
                session_id=session_id,
                transport=transport,
            )
            await repo.end_session(db, session_id, EndState.ENDED_BEFORE_AGENT_START)
    except Exception as exc:
        logger.opt(exception=exc).error("Failed to record a refused call")


@asynccontextmanager
async def refusals_recorded(
    state: ControlState, agent: Agent, transport: str
) -> AsyncIterator[None]:
    """A start of ``agent`` in the block that finds the pool full (``AtCapacity``, which goes
    on to the caller) is recorded as a refused session of ``transport``."""
    try:
        yield
    except AtCapacity:
        await record_refused(state, agent, str(uuid.uuid4()), transport)
        raise
