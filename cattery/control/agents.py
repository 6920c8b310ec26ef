"""Agents: the one place that looks them up, deploys them, plans their pools, reads secrets.

Every entry point (the private API, the public starts, webhooks, ``cattery serve --agent``,
a restart) goes through these functions, so an agent is found, checked and turned into a
running pool the same way whoever asks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.control import profiles, regions, wire
from cattery.control.deploy_fields import deploy_fields
from cattery.control.deployer import DEPLOY_INTERRUPTED, DeployPlan, Phase
from cattery.control.enforcement import enforced_resources
from cattery.control.images import load_pull_auth
from cattery.control.lookups import AgentTarget
from cattery.control.profiles import stored_resources
from cattery.control.state import ControlState
from cattery.control.validation import check_agent_name, check_image, check_set_name, check_text
from cattery.errors import AgentNotFound, CatteryError, Conflict, InvalidRequest, NotFound
from cattery.store import repositories as repo
from cattery.store.models import Agent, Deployment, Organization

MIN_SESSION_SECONDS, MAX_SESSION_SECONDS = 60, 14400
#: the longest a start may be set to wait for an instance
MAX_START_QUEUE_SECONDS = 600


class AutoScaling(BaseModel):
    model_config = ConfigDict(extra="allow")
    minAgents: int | None = Field(None, ge=0)
    maxAgents: int | None = Field(None, ge=1)


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    serviceName: str | None = None
    image: str | None = None
    secretSet: str | None = None
    imagePullSecretSet: str | None = None
    region: str | None = None
    agentProfile: str | None = None
    autoScaling: AutoScaling | None = None
    maxSessionDuration: int | None = None
    buildId: str | None = None
    forceRedeploy: bool | None = None
    resources: dict[str, Any] | None = None
    architecture: str | None = None
    websocketAuth: str | None = None
    krispViva: dict[str, Any] | None = None
    #: cattery's own: the Session API passes cookies both ways for this agent's sessions
    sessionCookies: bool | None = None
    #: cattery's own: where ``session.started`` and ``session.ended`` are posted ("" for none)
    sessionWebhookUrl: str | None = None
    #: cattery's own: how long a start may wait for an instance when all are busy
    startQueueSeconds: int | None = Field(None, ge=0, le=MAX_START_QUEUE_SECONDS)


def _webhook_url(req: DeployRequest, previous: Any) -> str | None:
    """The deploy's session webhook URL, else the previous deployment's; "" clears it."""
    if req.sessionWebhookUrl is None:
        return previous.session_webhook_url if previous else None
    url = req.sessionWebhookUrl.strip()
    if not url:
        return None
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or len(url) > 2048:
        raise InvalidRequest("sessionWebhookUrl must be an http(s) URL of at most 2048 characters")
    return url


def agent_key(org: Organization | str, name: str) -> str:
    """The key of an agent's pool and live sessions: ``org/name`` (the org or its name)."""
    org_name = org if isinstance(org, str) else org.name
    return f"{org_name}/{name}"


async def get_agent(db: AsyncSession, org: Organization, name: str) -> Agent:
    """The organization's live agent row ``name``; else 404. For callers that change it or
    read its records; a start uses ``lookup`` (kept in memory)."""
    agent = await repo.get_agent(db, org.id, name)
    if agent is None:
        raise AgentNotFound(f"Agent {name!r} not found")
    return agent


async def lookup(state: ControlState, org: Organization, name: str) -> AgentTarget:
    """The agent ``name`` and its active deployment, as every start finds it (cached)."""
    return await state.lookups.agent(state.sessionmaker, org, name)


async def secret_values(
    state: ControlState, db: AsyncSession, organization_id: str, set_name: str | None
) -> dict[str, str]:
    """The decrypted values of a secret set (none named, or gone: empty)."""
    if not set_name:
        return {}
    found = await repo.get_secret_set(db, organization_id, set_name)
    if found is None:
        return {}
    return await repo.get_secret_values(db, state.box, found)


async def deployment_secrets(state: ControlState, db: AsyncSession, agent: Agent) -> dict[str, str]:
    """The values of the secret set of ``agent``'s active deployment (none: empty)."""
    if agent.active_deployment_id is None:
        return {}
    dep = await repo.get_deployment(db, agent.active_deployment_id)
    if dep is None:
        return {}
    return await secret_values(state, db, agent.organization_id, dep.secret_set)


async def deployment_plan(
    state: ControlState,
    db: AsyncSession,
    org: Organization,
    name: str,
    dep: Deployment,
    *,
    secrets: dict[str, str] | None = None,
    strict_pull_auth: bool = True,
) -> DeployPlan:
    """What the deployer needs to run ``dep``: its settings, secrets and pull credentials.

    ``strict_pull_auth=False`` (a restart): a pull secret that no longer reads is logged and
    the image pulled without it, so one agent's broken secret never stops the server.
    """
    if secrets is None:
        secrets = await secret_values(state, db, org.id, dep.secret_set)
    try:
        pull_auth = await load_pull_auth(db, state.box, org.id, dep.image_pull_secret_set)
    except CatteryError as exc:
        if strict_pull_auth:
            raise
        logger.error(f"Agent {name}: {exc.message}; pulling without credentials")
        pull_auth = None
    return DeployPlan(
        agent_key=agent_key(org, name),
        deployment_id=dep.id,
        image=dep.image,
        min_agents=dep.min_agents,
        max_agents=dep.max_agents,
        profile=dep.agent_profile,
        limits=stored_resources(dep.resources, dep.agent_profile).limits,
        krisp_viva_audio_filter=dep.krisp_viva_audio_filter,
        secrets=secrets,
        pull_auth=pull_auth,
        session_cookies=dep.session_cookies,
        organization_id=org.id,
        agent_id=dep.agent_id,
        agent_name=name,
        region=dep.region,
    )


async def details(
    state: ControlState, db: AsyncSession, org: Organization, agent: Agent
) -> dict[str, Any]:
    """The agent as ``agent status`` shows it: the deployment its last deploy asked for (its
    settings, readiness, phase and errors), and the active one that serves meanwhile."""
    active_id = agent.active_deployment_id
    dep = await repo.latest_deployment(db, agent.id) if active_id else None
    status = state.deployer.status(dep.id if dep is not None else None)
    errors, phase = status.errors, status.phase
    if not errors and dep is not None and dep.failed_code:  # it failed before a restart
        errors = [{"code": dep.failed_code, "message": dep.failed_message or ""}]
        phase = Phase.FAILED
    serving = state.deployer.status(active_id)
    pool = state.pools.get(agent_key(org, agent.name))
    return wire.service_details(
        agent,
        dep,
        ready=status.ready,
        active_sessions=state.supervisor.active_count(agent.id),
        errors=errors,
        pool=pool.stats().as_dict() if pool is not None else None,
        phase=phase,
        plain_processes=status.plain_processes,
        resources=enforced_resources(state, dep) if dep is not None else None,
        active=(active_id, serving.ready) if dep is None or dep.id != active_id else None,
    )


async def deploy(
    state: ControlState,
    db: AsyncSession,
    org: Organization,
    name: str,
    req: DeployRequest,
    *,
    create: bool | None,
) -> dict[str, Any]:
    """A new deployment of agent ``name`` (``create``: True must be new, False must exist),
    recorded, then activated in the background; the agent's details."""
    check_agent_name(name)
    existing = await repo.get_agent(db, org.id, name)
    if create is True and existing is not None:
        raise Conflict(f"Agent {name!r} already exists")
    if create is False and existing is None:
        raise AgentNotFound(f"Agent {name!r} not found")
    previous = (
        await repo.get_deployment(db, existing.active_deployment_id)
        if existing is not None and existing.active_deployment_id
        else None
    )
    if req.image and req.buildId:
        raise InvalidRequest("Give image or buildId, not both")
    build_id = req.buildId or (previous.build_id if previous and not req.image else None)
    if req.buildId:
        image: str | None = await state.builds.image_for_deploy(db, org, req.buildId)
    else:
        image = req.image or (previous.image if previous else None)
    if not image:
        raise InvalidRequest("image (or buildId) is required")
    check_image(image)
    state.deployer.resolve(image)  # a 400 naming the problem, before anything is written
    profile, resources = await profiles.for_deploy(
        db, org, req.agentProfile, req.resources, previous
    )
    fields = deploy_fields(state.settings, req, previous)
    scaling = req.autoScaling or AutoScaling()
    min_agents = (
        scaling.minAgents
        if scaling.minAgents is not None
        else (previous.min_agents if previous else 0)
    )
    max_agents = (
        scaling.maxAgents
        if scaling.maxAgents is not None
        else (previous.max_agents if previous else state.settings.pools.max_agents)
    )
    if min_agents > max_agents:
        raise InvalidRequest(f"minAgents ({min_agents}) is more than maxAgents ({max_agents})")
    ceiling = state.settings.pools.max_agents_limit
    if max_agents > ceiling:
        raise InvalidRequest(
            f"maxAgents ({max_agents}) is more than this server allows ({ceiling})"
        )
    session_cookies = (
        req.sessionCookies
        if req.sessionCookies is not None
        else (previous.session_cookies if previous else False)
    )
    webhook_url = _webhook_url(req, previous)
    start_queue = (
        req.startQueueSeconds
        if req.startQueueSeconds is not None
        else (previous.start_queue_seconds if previous else 0)
    )
    max_session = req.maxSessionDuration or (
        previous.max_session_duration if previous else state.settings.pools.max_session_duration
    )
    if not MIN_SESSION_SECONDS <= max_session <= MAX_SESSION_SECONDS:
        raise InvalidRequest(
            f"maxSessionDuration must be {MIN_SESSION_SECONDS}-{MAX_SESSION_SECONDS} seconds"
        )
    secret_set = (
        req.secretSet if req.secretSet is not None else (previous.secret_set if previous else None)
    )
    if secret_set:
        check_set_name(secret_set)
        if await repo.get_secret_set(db, org.id, secret_set) is None:
            raise NotFound(f"Secret set {secret_set!r} not found")
    secrets = await secret_values(state, db, org.id, secret_set)
    pull_secret_set = (
        req.imagePullSecretSet
        if req.imagePullSecretSet is not None
        else (previous.image_pull_secret_set if previous else None)
    )
    if pull_secret_set:
        check_set_name(pull_secret_set)
    if req.buildId is not None:
        check_text("buildId", req.buildId, max_chars=255)
    pull_auth = await load_pull_auth(db, state.box, org.id, pull_secret_set)
    # The engine must hold (or pull) the image before the agent exists: no half-made agent.
    await state.deployer.check_image(image, pull_auth)
    region = req.region or (
        existing.region if existing else (org.default_region or state.settings.default_region)
    )
    check_text("region", region, max_chars=64)
    if req.region is not None or existing is None:  # a region newly chosen must exist
        await regions.check_region(db, region)
    agent = existing or await repo.create_agent(db, org.id, name, region)
    dep = await repo.create_deployment(
        db,
        agent_id=agent.id,
        image=image,
        secret_set=secret_set,
        image_pull_secret_set=pull_secret_set,
        region=region,
        agent_profile=profile,
        min_agents=min_agents,
        max_agents=max_agents,
        max_session_duration=max_session,
        build_id=build_id,
        session_cookies=session_cookies,
        resources=resources.as_dict(),
        **fields,
        session_webhook_url=webhook_url,
        start_queue_seconds=start_queue,
    )
    if previous is None or not state.deployer.status(previous.id).ready:
        await repo.set_active_deployment(db, agent, dep.id)  # nothing serves: this one will
    # else the previous deployment serves until this one is ready (the deployer switches)
    await db.commit()
    state.lookups.forget_agent(org.id, name)
    state.deployer.activate(await deployment_plan(state, db, org, name, dep, secrets=secrets))
    return await details(state, db, org, agent)


async def delete(state: ControlState, db: AsyncSession, org: Organization, name: str) -> None:
    """Agent ``name`` is gone: its live sessions are stopped and its pool closed."""
    agent = await get_agent(db, org, name)
    await repo.soft_delete_agent(db, agent)
    await db.commit()
    state.lookups.forget_agent(org.id, name)
    for live in state.supervisor.live_sessions(agent.id):
        await state.supervisor.stop(live.id)
    await state.deployer.remove(agent_key(org, name))


async def activate_deployed(state: ControlState) -> None:
    """After a restart, every deployed agent gets its pool back: its active deployment's.
    A newer deployment a restart interrupted is recorded as failed (deploy it again)."""
    async with state.sessionmaker() as db:
        for agent in await repo.list_all_live_agents(db):
            if agent.active_deployment_id is None:
                continue
            latest = await repo.latest_deployment(db, agent.id)
            if latest is not None and latest.id != agent.active_deployment_id:
                if latest.failed_code is None:
                    await repo.set_deployment_outcome(
                        db,
                        latest.id,
                        failed_code=DEPLOY_INTERRUPTED,
                        failed_message="The control plane restarted before this deployment "
                        "was ready; the previous one serves. Deploy again.",
                    )
                    await db.commit()
            dep = await repo.get_deployment(db, agent.active_deployment_id)
            org = await repo.get_organization(db, agent.organization_id)
            if dep is None or org is None:
                continue
            plan = await deployment_plan(state, db, org, agent.name, dep, strict_pull_auth=False)
            state.deployer.activate(plan)


async def deploy_bundled(state: ControlState) -> None:
    """Agents named in the settings (``cattery serve --agent NAME=PATH``) are deployed at
    start, through the same deploy as the API; one already running that image is left
    alone, so restarts don't pile up deployments."""
    agents = state.settings.agents
    if not agents:
        return
    async with state.sessionmaker() as db:
        org = await repo.get_organization_by_name(db, state.settings.organization)
        assert org is not None, "bootstrap creates the organization"
        for name, folder in agents.items():
            image = f"{folder}:latest"
            agent = await repo.get_agent(db, org.id, name)
            if agent is not None and agent.active_deployment_id:
                current = await repo.get_deployment(db, agent.active_deployment_id)
                if current is not None and current.image == image:
                    continue
            req = DeployRequest(image=image)
            if name == state.settings.dev.agent:  # cattery dev: the first session is warm
                req.autoScaling = AutoScaling(minAgents=1)
            await deploy(state, db, org, name, req, create=None)
            logger.info(f"Deployed bundled agent {name!r} from {folder}")
        await db.commit()
