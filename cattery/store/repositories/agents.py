"""Agents (soft-deleted, so sessions and logs keep their agent) and their deployments."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.errors import Conflict, InvalidRequest
from cattery.store.models import Agent, Deployment
from cattery.store.repositories._validate import check_slug
from cattery.store.types import utcnow

#: Pipecat Cloud's defaults when a deploy leaves them out
DEFAULT_AGENT_PROFILE = "agent-1x"
DEFAULT_MAX_SESSION_DURATION = 7200


async def create_agent(db: AsyncSession, organization_id: str, name: str, region: str) -> Agent:
    """A new agent; Conflict if the organization already has a live one with this name."""
    check_slug(name, "agent")
    if await get_agent(db, organization_id, name) is not None:
        raise Conflict(f"Agent {name!r} already exists")
    agent = Agent(organization_id=organization_id, name=name, region=region)
    db.add(agent)
    await db.flush()
    return agent


async def get_agent(db: AsyncSession, organization_id: str, name: str) -> Agent | None:
    """The organization's live (not deleted) agent called ``name``."""
    return await db.scalar(
        select(Agent).where(
            Agent.organization_id == organization_id,
            Agent.name == name,
            Agent.deleted_at.is_(None),
        )
    )


async def get_agent_by_id(db: AsyncSession, agent_id: str) -> Agent | None:
    """Any agent, deleted ones included: old sessions and instances still point at them."""
    return await db.get(Agent, agent_id)


async def list_agents(
    db: AsyncSession, organization_id: str, region: str | None = None
) -> list[Agent]:
    """The organization's live agents by name, optionally in one region."""
    query = select(Agent).where(
        Agent.organization_id == organization_id, Agent.deleted_at.is_(None)
    )
    if region is not None:
        query = query.where(Agent.region == region)
    return list(await db.scalars(query.order_by(Agent.name)))


async def list_all_live_agents(db: AsyncSession) -> list[Agent]:
    """Every organization's live agents: what the pools are rebuilt from at start-up."""
    query = select(Agent).where(Agent.deleted_at.is_(None))
    return list(await db.scalars(query.order_by(Agent.organization_id, Agent.name)))


async def soft_delete_agent(db: AsyncSession, agent: Agent) -> None:
    """Hide the agent and free its name; its rows stay for history."""
    if agent.deleted_at is None:
        agent.deleted_at = utcnow()
        await db.flush()


async def set_active_deployment(db: AsyncSession, agent: Agent, deployment_id: str | None) -> None:
    """Point the agent at one of its deployments (or at none)."""
    if deployment_id is not None:
        deployment = await db.get(Deployment, deployment_id)
        if deployment is None or deployment.agent_id != agent.id:
            raise InvalidRequest(f"Deployment {deployment_id!r} is not a deployment of this agent")
    agent.active_deployment_id = deployment_id
    agent.updated_at = utcnow()
    await db.flush()


async def create_deployment(
    db: AsyncSession,
    agent_id: str,
    *,
    image: str,
    region: str,
    min_agents: int,
    max_agents: int,
    agent_profile: str = DEFAULT_AGENT_PROFILE,
    max_session_duration: int = DEFAULT_MAX_SESSION_DURATION,
    secret_set: str | None = None,
    image_pull_secret_set: str | None = None,
    build_id: str | None = None,
    backend: str = "local",
    environment_python: str | None = None,
    session_cookies: bool = False,
    resources: dict[str, str] | None = None,
    architecture: str | None = None,
    websocket_auth: str | None = None,
    krisp_viva_audio_filter: str | None = None,
    session_webhook_url: str | None = None,
    start_queue_seconds: int = 0,
) -> Deployment:
    """A new deployment record; making it the active one is a separate step."""
    if not 0 <= min_agents <= max_agents:
        raise InvalidRequest("Invalid scaling: need 0 <= minAgents <= maxAgents")
    if max_session_duration <= 0:
        raise InvalidRequest("maxSessionDuration must be positive")
    deployment = Deployment(
        agent_id=agent_id,
        image=image,
        region=region,
        min_agents=min_agents,
        max_agents=max_agents,
        agent_profile=agent_profile,
        max_session_duration=max_session_duration,
        secret_set=secret_set,
        image_pull_secret_set=image_pull_secret_set,
        session_cookies=session_cookies,
        session_webhook_url=session_webhook_url,
        start_queue_seconds=start_queue_seconds,
        build_id=build_id,
        backend=backend,
        environment_python=environment_python,
        resources=resources,
        architecture=architecture,
        websocket_auth=websocket_auth,
        krisp_viva_audio_filter=krisp_viva_audio_filter,
    )
    db.add(deployment)
    await db.flush()
    return deployment


async def get_deployment(db: AsyncSession, deployment_id: str) -> Deployment | None:
    return await db.get(Deployment, deployment_id)


async def list_deployments(db: AsyncSession, agent_id: str) -> list[Deployment]:
    """The agent's deployments, newest first."""
    query = select(Deployment).where(Deployment.agent_id == agent_id)
    return list(await db.scalars(query.order_by(Deployment.created_at.desc(), Deployment.id)))


async def latest_deployment(db: AsyncSession, agent_id: str) -> Deployment | None:
    """The agent's newest deployment: the one its last deploy asked for."""
    query = select(Deployment).where(Deployment.agent_id == agent_id)
    return await db.scalar(query.order_by(Deployment.created_at.desc(), Deployment.id).limit(1))


async def set_deployment_outcome(
    db: AsyncSession, deployment_id: str, *, failed_code: str | None, failed_message: str | None
) -> None:
    """Record that the deployment failed, and why (None, None: it is ready)."""
    deployment = await db.get(Deployment, deployment_id)
    if deployment is None:
        return
    deployment.failed_code = failed_code
    deployment.failed_message = failed_message
    deployment.updated_at = utcnow()
    await db.flush()


async def set_deployment_environment(
    db: AsyncSession, deployment: Deployment, environment_python: str | None
) -> None:
    """Record the interpreter of the venv built for this deployment."""
    deployment.environment_python = environment_python
    deployment.updated_at = utcnow()
    await db.flush()


async def set_deployment_plain_processes(
    db: AsyncSession, deployment_id: str, reason: str | None
) -> None:
    """Record why the deployment's instances are plain processes (None: they are forked)."""
    deployment = await db.get(Deployment, deployment_id)
    if deployment is None:
        return
    deployment.plain_processes_reason = reason
    deployment.updated_at = utcnow()
    await db.flush()
