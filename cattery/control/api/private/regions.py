"""Regions (``/v1/organizations/{org}/regions...``): ``pipecat cloud regions list``,
``show``, ``register``, ``delete`` and ``enroll-token``."""

from __future__ import annotations

from fastapi import APIRouter

from cattery.control import regions
from cattery.control.deps import DB, Org, PrivateCaller, State
from cattery.control.routing import BoundedJSONRoute


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)
    for base in ("/v1", "/v1/organizations/{org}"):
        _add_routes(router, base + "/regions")
    return router


def _add_routes(router: APIRouter, base: str) -> None:
    @router.get(base)
    async def list_regions(state: State, db: DB, org: Org) -> dict:
        return {"regions": await regions.listing(db, state.settings)}

    @router.get(base + "/{region_key}")
    async def show_region(state: State, db: DB, org: Org, region_key: str) -> dict:
        return regions.record(state.settings, await regions.get(db, region_key))

    @router.post(base)
    async def register_region(
        state: State, db: DB, org: Org, caller: PrivateCaller, req: regions.RegisterRegionRequest
    ) -> dict:
        regions.require_admin(caller)
        return regions.record(state.settings, await regions.register(db, req))

    @router.delete(base + "/{region_key}")
    async def delete_region(
        state: State, db: DB, org: Org, caller: PrivateCaller, region_key: str
    ) -> dict:
        regions.require_admin(caller)
        await regions.delete(state, db, region_key)
        return {"deleted": region_key}

    @router.post(base + "/{region_key}/enrollment-tokens")
    async def enroll_token(
        state: State, db: DB, org: Org, caller: PrivateCaller, region_key: str
    ) -> dict:
        regions.require_admin(caller)
        return await regions.mint_enroll_token(db, state.settings, region_key)
