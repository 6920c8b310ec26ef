"""``POST /v1/public/{agent}/start``: a session on a fresh instance, or a 429 when full."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from cattery.contract import START_WAIT_HEADER
from cattery.control import responses
from cattery.control.deps import DB, PublicCaller, State, base_url, disconnected
from cattery.control.sessions import answer_start, parse_start_request, parse_start_wait


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/public/{name}/start",
        response_model=responses.StartResponse,
        response_model_exclude_unset=True,
    )
    async def start(
        request: Request, state: State, db: DB, caller: PublicCaller, name: str
    ) -> dict[str, Any]:
        requested_at = time.monotonic()
        req = parse_start_request(await request.body())
        start_wait = parse_start_wait(request.headers.get(START_WAIT_HEADER))
        return await answer_start(
            state,
            db,
            caller.organization,
            name,
            req,
            base_url=base_url(request),
            requested_at=requested_at,
            start_wait=start_wait,
            gone=lambda: disconnected(request),
        )

    return router
