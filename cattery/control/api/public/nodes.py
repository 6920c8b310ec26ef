"""``POST /v1/cluster/join``: a new machine trades a region's one-time enroll token for
the cluster's join details (``cattery node join``). It takes no API key: the token is the
credential, spent by its first use."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cattery.contract import CLUSTER_JOIN_PATH
from cattery.control import regions
from cattery.control.deps import DB, State
from cattery.control.routing import BoundedJSONRoute


class JoinRequest(BaseModel):
    token: str = Field(min_length=1, max_length=256)


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)

    @router.post(CLUSTER_JOIN_PATH)
    async def join(state: State, db: DB, req: JoinRequest) -> dict:
        details = await regions.exchange(db, state.settings, req.token)
        return details.to_body()

    return router
