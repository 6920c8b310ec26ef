"""Builds (``/v1/organizations/{org}/builds...`` and ``/v1/builds...``), and the upload URL
they hand out, which takes no API key: its form fields carry a signed upload token."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cattery.control import regions, wire
from cattery.control.builds import STATUSES
from cattery.control.deps import DB, Org, State
from cattery.control.routing import BoundedJSONRoute
from cattery.errors import InvalidRequest
from cattery.store import repositories as repo


class UploadUrlRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    region: str | None = None
    #: cattery's own: when given, the upload must have this hash
    contextHash: str | None = None


class CreateBuildRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    uploadId: str = Field(min_length=1, max_length=64)
    region: str | None = None
    dockerfilePath: str = Field("Dockerfile", min_length=1, max_length=1024)


async def _region(state: State, db: DB, org: Org, region: str | None) -> str:
    chosen = region or org.default_region or state.settings.default_region
    return await regions.check_region(db, chosen)


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)

    @router.post("/v1/builds/uploads/{upload_id}", status_code=204)
    async def upload(state: State, request: Request, upload_id: str) -> Response:
        await state.builds.receive(request.headers, request.stream(), upload_id)
        return Response(status_code=204)

    for base in ("/v1/builds", "/v1/organizations/{org}/builds"):
        _add_routes(router, base)
    return router


def _add_routes(router: APIRouter, base: str) -> None:
    @router.get(base)
    async def list_builds(
        state: State,
        db: DB,
        org: Org,
        contextHash: str | None = Query(None, max_length=64),
        status: str | None = Query(None),
        region: str | None = Query(None, max_length=64),
        limit: int = Query(20, ge=1, le=100),
        offset: int = Query(0, ge=0),
    ) -> dict:
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"Unknown status {status!r}; use one of {', '.join(STATUSES)}")
        rows, total = await repo.list_builds(
            db,
            org.id,
            context_hash=contextHash,
            status=status,
            region=region,
            limit=limit,
            offset=offset,
        )
        return {
            "builds": [wire.build_item(b) for b in rows],
            "total": total,
            "limit": limit,
            "offset": offset,
        }

    @router.post(base + "/upload-url")
    async def upload_url(
        state: State, db: DB, request: Request, org: Org, req: UploadUrlRequest | None = None
    ) -> dict:
        req = req or UploadUrlRequest()
        await _region(state, db, org, req.region)
        return state.builds.upload_url(org, str(request.base_url), req.contextHash)

    @router.post(base)
    async def create_build(state: State, db: DB, org: Org, req: CreateBuildRequest) -> dict:
        build, cached = await state.builds.create(
            db,
            org,
            upload_id=req.uploadId,
            dockerfile_path=req.dockerfilePath,
            region=await _region(state, db, org, req.region),
        )
        return {
            "build": wire.build_item(build),
            "contextHash": build.context_hash,
            "cached": cached,
        }

    @router.get(base + "/{build_id}")
    async def get_build(state: State, db: DB, org: Org, build_id: str) -> dict:
        return {"build": wire.build_item(await state.builds.get(db, org, build_id))}

    @router.get(base + "/{build_id}/logs")
    async def build_logs(
        state: State, db: DB, org: Org, build_id: str, limit: int = Query(500, ge=1, le=10000)
    ) -> dict:
        build = await state.builds.get(db, org, build_id)
        return {"logs": await repo.list_build_log_lines(db, build.id, limit)}
