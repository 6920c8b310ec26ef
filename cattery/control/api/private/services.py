"""Agents ("services"): deploy, inspect, list, delete, and their deployments.

The same handlers serve the OpenAPI routes (``/v1/agents...``) and the org-scoped routes
the official CLI calls (``/v1/organizations/{org}/services...``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from cattery.control import profiles, wire
from cattery.control.api.private.validation import (
    check_agent_name,
    check_image,
    check_set_name,
    check_text,
)
from cattery.control.api.routing import BoundedJSONRoute
from cattery.control.deploy_fields import deploy_fields
from cattery.control.deployer import DeployPlan
from cattery.control.deps import DB, Org, State
from cattery.control.images import load_pull_auth
from cattery.errors import AgentNotFound, Conflict, InvalidRequest, NotFound
from cattery.store import repositories as repo
from cattery.store.models import Agent, Organization

MIN_SESSION_SECONDS, MAX_SESSION_SECONDS = 60, 14400


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


async def get_agent(db: DB, org: Organization, name: str) -> Agent:
    agent = await repo.get_agent(db, org.id, name)
    if agent is None:
        raise AgentNotFound(f"Agent {name!r} not found")
    return agent


def agent_key(org: Organization, name: str) -> str:
    """The key of an agent's pool and live sessions: ``org/name``."""
    return f"{org.name}/{name}"


async def details(state: State, db: DB, org: Organization, agent: Agent) -> dict[str, Any]:
    dep = (
        await repo.get_deployment(db, agent.active_deployment_id)
        if agent.active_deployment_id
        else None
    )
    status = state.deployer.status(agent.active_deployment_id)
    pool = state.pools.get(agent_key(org, agent.name))
    return wire.service_details(
        agent,
        dep,
        ready=status.ready,
        active_sessions=state.supervisor.active_count(agent.id),
        errors=status.errors,
        pool=pool.stats().as_dict() if pool is not None else None,
        phase=status.phase,
        plain_processes=status.plain_processes,
    )


async def deploy_agent(
    state: State, db: DB, org: Organization, name: str, req: DeployRequest, *, create: bool | None
) -> dict[str, Any]:
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
    secrets: dict[str, str] = {}
    if secret_set:
        check_set_name(secret_set)
        found = await repo.get_secret_set(db, org.id, secret_set)
        if found is None:
            raise NotFound(f"Secret set {secret_set!r} not found")
        secrets = await repo.get_secret_values(db, state.box, found)
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
    )
    await repo.set_active_deployment(db, agent, dep.id)
    await db.commit()
    state.lookups.forget_agent(org.id, name)
    state.deployer.activate(
        DeployPlan(
            agent_key=agent_key(org, name),
            deployment_id=dep.id,
            image=image,
            min_agents=min_agents,
            max_agents=max_agents,
            profile=dep.agent_profile,
            limits=resources.limits,
            krisp_viva_audio_filter=dep.krisp_viva_audio_filter,
            secrets=secrets,
            pull_auth=pull_auth,
            session_cookies=session_cookies,
            organization_id=org.id,
            agent_id=agent.id,
        )
    )
    return await details(state, db, org, agent)


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)
    for base, wrap in (("/v1/agents", False), ("/v1/organizations/{org}/services", True)):
        _add_routes(router, base, wrap)
    return router


def _add_routes(router: APIRouter, base: str, wrap: bool) -> None:
    """``wrap``: the CLI's status route returns ``{"body": details}``."""

    @router.get(base)
    async def list_services(
        state: State, db: DB, org: Org, region: str | None = Query(None)
    ) -> dict:
        agents = await repo.list_agents(db, org.id, region=region)
        return {"services": [wire.service_list_item(a) for a in agents]}

    @router.get(base + "/{name}")
    async def get_service(state: State, db: DB, org: Org, name: str) -> dict:
        body = await details(state, db, org, await get_agent(db, org, name))
        return {"body": body} if wrap else body

    @router.post(base)
    async def create_service(state: State, db: DB, org: Org, req: DeployRequest) -> dict:
        return await deploy_agent(
            state, db, org, req.serviceName or "", req, create=None if wrap else True
        )

    @router.put(base)
    async def update_service(state: State, db: DB, org: Org, req: DeployRequest) -> dict:
        return await deploy_agent(state, db, org, req.serviceName or "", req, create=None)

    @router.post(base + "/{name}")
    async def update_named_service(
        state: State, db: DB, org: Org, name: str, req: DeployRequest
    ) -> dict:
        return await deploy_agent(state, db, org, name, req, create=False)

    @router.delete(base + "/{name}")
    async def delete_service(state: State, db: DB, org: Org, name: str) -> dict:
        agent = await get_agent(db, org, name)
        await repo.soft_delete_agent(db, agent)
        await db.commit()
        state.lookups.forget_agent(org.id, name)
        for live in state.supervisor.live_sessions(agent.id):
            await state.supervisor.stop(live.id)
        await state.deployer.remove(agent_key(org, name))
        return {"status": "OK"}

    @router.get(base + "/{name}/deployments")
    async def list_deployments(db: DB, org: Org, name: str) -> dict:
        agent = await get_agent(db, org, name)
        deployments = await repo.list_deployments(db, agent.id)
        return {"deployments": [wire.deployment_item(d) for d in deployments]}
