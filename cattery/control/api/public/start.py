"""``POST /v1/public/{agent}/start``: a session on a fresh instance, or a 429 when full.

The route every start takes is kept short: no database session (the caller's key and the
agent come from memory once seen), and the answer leaves as built, unvalidated again (its
shape is ``StartResponse``'s, which the OpenAPI document still names).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cattery.contract import START_WAIT_HEADER
from cattery.control import responses
from cattery.control.deps import PublicCaller, State, base_url, disconnected
from cattery.control.sessions import answer_start, parse_start_request, parse_start_wait


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/public/{name}/start",
        response_model=responses.StartResponse,
        response_model_exclude_unset=True,
    )
    async def start(
        request: Request, state: State, caller: PublicCaller, name: str
    ) -> JSONResponse:
        requested_at = time.monotonic()
        req = parse_start_request(await request.body())
        start_wait = parse_start_wait(request.headers.get(START_WAIT_HEADER))
        answer = await answer_start(
            state,
            caller.organization,
            name,
            req,
            base_url=base_url(request),
            requested_at=requested_at,
            start_wait=start_wait,
            gone=lambda: disconnected(request),
        )
        return JSONResponse(answer)

    return router
