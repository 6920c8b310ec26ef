"""Agents ("services"): deploy, inspect, list, delete, and their deployments.

The same handlers serve the OpenAPI routes (``/v1/agents...``) and the org-scoped routes
the official CLI calls (``/v1/organizations/{org}/services...``).
"""

from __future__ import annotations

from fastapi import APIRouter, Query

from cattery.control import agents, responses, wire
from cattery.control.agents import DeployRequest
from cattery.control.deps import DB, Org, State
from cattery.control.routing import BoundedJSONRoute
from cattery.store import repositories as repo


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)
    for base, wrap in (("/v1/agents", False), ("/v1/organizations/{org}/services", True)):
        _add_routes(router, base, wrap)
    return router


def _add_routes(router: APIRouter, base: str, wrap: bool) -> None:
    """``wrap``: the CLI's status route returns ``{"body": details}``."""

    details = responses.ServiceDetailsBody if wrap else responses.ServiceDetails

    @router.get(base, response_model=responses.ServiceList)
    async def list_services(
        state: State, db: DB, org: Org, region: str | None = Query(None)
    ) -> dict:
        found = await repo.list_agents(db, org.id, region=region)
        return {"services": [wire.service_list_item(a) for a in found]}

    @router.get(base + "/{name}", response_model=details)
    async def get_service(state: State, db: DB, org: Org, name: str) -> dict:
        body = await agents.details(state, db, org, await agents.get_agent(db, org, name))
        return {"body": body} if wrap else body

    @router.post(base, response_model=responses.ServiceDetails)
    async def create_service(state: State, db: DB, org: Org, req: DeployRequest) -> dict:
        return await agents.deploy(
            state, db, org, req.serviceName or "", req, create=None if wrap else True
        )

    @router.put(base, response_model=responses.ServiceDetails)
    async def update_service(state: State, db: DB, org: Org, req: DeployRequest) -> dict:
        return await agents.deploy(state, db, org, req.serviceName or "", req, create=None)

    @router.post(base + "/{name}", response_model=responses.ServiceDetails)
    async def update_named_service(
        state: State, db: DB, org: Org, name: str, req: DeployRequest
    ) -> dict:
        return await agents.deploy(state, db, org, name, req, create=False)

    @router.delete(base + "/{name}", response_model=responses.StatusOK)
    async def delete_service(state: State, db: DB, org: Org, name: str) -> dict:
        await agents.delete(state, db, org, name)
        return {"status": "OK"}

    @router.get(base + "/{name}/deployments", response_model=responses.DeploymentList)
    async def list_deployments(db: DB, org: Org, name: str) -> dict:
        agent = await agents.get_agent(db, org, name)
        deployments = await repo.list_deployments(db, agent.id)
        return {"deployments": [wire.deployment_item(d) for d in deployments]}
