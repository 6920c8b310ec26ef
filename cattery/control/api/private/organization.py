"""Organizations, API keys, the calling user and properties."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, Field

from cattery.control import keys, regions, wire
from cattery.control.deps import DB, Org, PrivateCaller, State
from cattery.control.routing import BoundedJSONRoute
from cattery.errors import InvalidRequest
from cattery.store import repositories as repo
from cattery.store.models import Organization


class CreateKeyRequest(BaseModel):
    name: str = Field(min_length=1, max_length=255)
    type: str = "public"


def default_region(state: State, org: Organization) -> str:
    """The organization's ``defaultRegion`` property, else the platform's."""
    return org.default_region or state.settings.default_region


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)

    @router.get("/v1/organizations")
    async def list_organizations(caller: PrivateCaller) -> dict:
        org = caller.organization
        return {"organizations": [{"name": org.name, "verboseName": org.verbose_name}]}

    @router.get("/v1/users")
    async def whoami(db: DB, caller: PrivateCaller) -> dict:
        user = await repo.get_user(db, caller.user_id) if caller.user_id else None
        emails = [{"emailAddress": user.email}] if user else []
        return {"user": {"userId": caller.user_id or caller.key_id, "emails": emails}}

    for base in ("/v1", "/v1/organizations/{org}"):
        _add_org_routes(router, base)
    return router


def _add_org_routes(router: APIRouter, base: str) -> None:
    @router.get(base + "/properties")
    async def properties(state: State, org: Org) -> dict:
        return {"properties": {"defaultRegion": default_region(state, org)}}

    @router.get(base + "/properties/schema")
    async def properties_schema(state: State, db: DB, org: Org) -> dict:
        return {
            "properties": {
                "defaultRegion": {
                    "type": "string",
                    "description": "Default region for new agents",
                    "default": state.settings.default_region,
                    "currentValue": default_region(state, org),
                    "readOnly": False,
                    "availableValues": await regions.names(db),
                }
            }
        }

    @router.patch(base + "/properties")
    async def update_properties(
        state: State, db: DB, org: Org, req: dict[str, Any] = Body(...)
    ) -> dict:
        unknown = set(req) - {"defaultRegion"}
        if unknown:
            raise InvalidRequest(
                f"Unknown properties: {', '.join(sorted(unknown))}; this cattery has defaultRegion"
            )
        region = req.get("defaultRegion")
        if not isinstance(region, str):
            raise InvalidRequest("defaultRegion must be a region's key", code="INVALID_REGION")
        await regions.check_region(db, region)
        await repo.set_default_region(db, org.id, region)
        await db.commit()  # then forgotten: callers' cached organization holds the old one
        state.lookups.forget_keys(org.id)
        return {"properties": {"defaultRegion": region}}

    @router.get(base + "/daily")
    async def daily(state: State, org: Org) -> dict:
        return {"apiKey": None, "domain": None}

    @router.get(base + "/apiKeys")
    async def list_keys(db: DB, org: Org) -> dict:
        keys = await repo.list_public_api_keys(db, org.id)
        return {
            "public": [
                {
                    "id": k.id,
                    "key": k.public_value,
                    "metadata": {"name": k.name},
                    "createdAt": wire.iso(k.created_at),
                    "revoked": k.revoked_at is not None,
                }
                for k in keys
            ],
            "total": len(keys),
        }

    @router.post(base + "/apiKeys")
    async def create_key(db: DB, org: Org, caller: PrivateCaller, req: CreateKeyRequest) -> dict:
        key, raw = await keys.create_key(db, org, req.type, req.name, user_id=caller.user_id)
        return {"id": key.id, "key": raw, "metadata": {"name": key.name}, "type": key.kind}

    @router.delete(base + "/apiKeys/{key_id}")
    async def revoke_key(state: State, db: DB, org: Org, key_id: str) -> dict:
        await keys.revoke_key(state, db, org, key_id)
        return {"status": "OK"}
