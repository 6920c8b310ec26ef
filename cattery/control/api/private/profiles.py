"""Agent profiles: ``GET/POST /agent-profiles`` and ``PATCH /agent-profiles/{name}``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from cattery.control import profiles
from cattery.control.deps import DB, Org
from cattery.control.routing import BoundedJSONRoute


class CreateProfileRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    apiName: str = Field(min_length=1, max_length=63)
    displayName: str | None = Field(None, max_length=255)
    resources: dict[str, Any]


class UpdateProfileRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    displayName: str | None = Field(None, max_length=255)
    resources: dict[str, Any] | None = None
    enabled: bool | None = None


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)
    for base in ("/v1/agent-profiles", "/v1/organizations/{org}/agent-profiles"):
        _add_routes(router, base)
    return router


def _add_routes(router: APIRouter, base: str) -> None:
    @router.get(base)
    async def list_profiles(db: DB, org: Org) -> dict:
        return {"agentProfiles": await profiles.list_profiles(db, org)}

    @router.post(base)
    async def create_profile(db: DB, org: Org, req: CreateProfileRequest) -> dict:
        item = await profiles.create_profile(
            db, org, name=req.apiName, display_name=req.displayName, resources=req.resources
        )
        return {"agentProfile": item}

    @router.patch(base + "/{name}")
    async def update_profile(db: DB, org: Org, name: str, req: UpdateProfileRequest) -> dict:
        item = await profiles.update_profile(
            db,
            org,
            name,
            display_name=req.displayName,
            resources=req.resources,
            enabled=req.enabled,
        )
        return {"agentProfile": item}
