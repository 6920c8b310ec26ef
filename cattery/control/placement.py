"""Calls that take an instance when they connect: the agent a call names, and refusals.

A carrier's media stream, a generic client, a WhatsApp call and a Daily dial-in each take an
instance from the agent's pool as they arrive. One that finds the pool full is refused in
its own way (a WebSocket close, an HTTP 429), and recorded as a session that ended before
its bot started, so the agent's session list shows the calls it missed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from loguru import logger

from cattery.control.api.private.services import agent_key, get_agent
from cattery.control.state import ControlState
from cattery.errors import AgentNotFound, AtCapacity, InvalidRequest, ServiceUnavailable
from cattery.pools.pool import Pool
from cattery.store import repositories as repo
from cattery.store.models import Agent, EndState


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
        if agent.active_deployment_id is None:
            raise ServiceUnavailable(f"Agent {agent_name!r} has no deployment")
        dep = await repo.get_deployment(db, agent.active_deployment_id)
        assert dep is not None
        ids = (org.id, agent.id, dep.id, dep.max_session_duration)
        key = agent_key(org, agent_name)
    status = await state.deployer.wait(ids[2])
    if status.errors:
        error = status.errors[0]["message"]
        raise ServiceUnavailable(f"Agent {agent_name!r} is not ready: {error}")
    pool = state.pools.get(key)
    if pool is None:
        raise ServiceUnavailable(f"Agent {agent_name!r} is not ready")
    return Target(
        organization_id=ids[0],
        agent_id=ids[1],
        deployment_id=ids[2],
        agent_key=key,
        max_session_seconds=ids[3],
        pool=pool,
    )


async def record_refused(
    state: ControlState,
    *,
    organization_id: str,
    agent_id: str,
    deployment_id: str,
    session_id: str,
    transport: str,
) -> None:
    """A call the pool had no instance for: a session that ended before its bot started.

    Never raises: the caller is refusing the call already, and that must still happen.
    """
    logger.warning(f"Call refused: no instance; recorded as session {session_id}")
    try:
        async with state.sessionmaker.begin() as db:
            await repo.create_session(
                db,
                organization_id=organization_id,
                agent_id=agent_id,
                deployment_id=deployment_id,
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
    """Record a call of ``agent`` that the block refuses for want of an instance (``AtCapacity``,
    which goes on to the caller), as a session of ``transport`` under a new id."""
    try:
        yield
    except AtCapacity:
        if agent.active_deployment_id is not None:
            await record_refused(
                state,
                organization_id=agent.organization_id,
                agent_id=agent.id,
                deployment_id=agent.active_deployment_id,
                session_id=str(uuid.uuid4()),
                transport=transport,
            )
        raise
