"""``POST /v1/public/{agent}/start``: a session on a fresh instance, or a 429 when full.

Every start comes this way, and a warm one is a few milliseconds in all, so the way is
short: no database session (the caller's key and the agent come from memory once seen),
and ``StartShortcut`` takes the request from the app's edge to ``answer`` without the
router, the dependency solver and the response model, which on a control plane idle a
moment before (cold caches) cost about as much as the rest of the start's work here. The
route below answers alike and is what the OpenAPI document describes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cattery.contract import START_WAIT_HEADER
from cattery.control import responses
from cattery.control.deps import base_url, bearer_key, disconnected
from cattery.control.sessions import (
    MAX_START_BODY_BYTES,
    WS_START_TRANSPORTS,
    answer_start,
    parse_start_request,
    parse_start_wait,
)
from cattery.control.state import ControlState
from cattery.errors import CatteryError, PayloadTooLarge, Unauthorized

_PREFIX, _SUFFIX = "/v1/public/", "/start"


async def answer(
    state: ControlState,
    name: str,
    raw: bytes,
    *,
    authorization: str | None,
    start_wait: str | None,
    base: Callable[[], str],
    gone: Callable[[], Awaitable[None]],
) -> dict[str, Any]:
    """The answer to a start of agent ``name`` with body ``raw``, by either way in."""
    requested_at = time.monotonic()
    principal = await state.lookups.principal(state.sessionmaker, bearer_key(authorization))
    if principal is None:
        raise Unauthorized("Invalid or revoked API key")
    req = parse_start_request(raw)
    return await answer_start(
        state,
        principal.organization,
        name,
        req,
        base_url=base() if req.transport in WS_START_TRANSPORTS else "",
        requested_at=requested_at,
        start_wait=parse_start_wait(start_wait),
        gone=gone,
    )


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/public/{name}/start",
        response_model=responses.StartResponse,
        response_model_exclude_unset=True,
    )
    async def start(request: Request, name: str) -> JSONResponse:
        result = await answer(
            request.app.state.control,
            name,
            await request.body(),
            authorization=request.headers.get("authorization"),
            start_wait=request.headers.get(START_WAIT_HEADER),
            base=lambda: base_url(request),
            gone=lambda: disconnected(request),
        )
        return JSONResponse(result)

    return router


class StartShortcut:
    """Serves ``POST /v1/public/{name}/start`` itself and passes everything else on.

    Errors are answered as the app's handlers answer them: a ``CatteryError`` in the
    platform's shape here, anything unexpected raised on to the app's outermost handler.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = _start_of(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        try:
            raw = await _read_body(receive)
            result: dict[str, Any] = await answer(
                scope["app"].state.control,
                name,
                raw,
                authorization=headers.get("authorization"),
                start_wait=headers.get(START_WAIT_HEADER),
                base=lambda: base_url(Request(scope)),
                gone=lambda: _disconnected(receive),
            )
            status = 200
        except CatteryError as exc:
            result, status = {"code": exc.code, "error": exc.message}, exc.status_code
        await JSONResponse(result, status_code=status)(scope, receive, send)


def _start_of(scope: Scope) -> str | None:
    """The agent's name when ``scope`` is a start (``POST /v1/public/{name}/start``)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
        return None
    name = path[len(_PREFIX) : -len(_SUFFIX)]
    return name if name and "/" not in name else None


def _headers(scope: Scope) -> dict[str, str]:
    wanted = (b"authorization", START_WAIT_HEADER.encode())
    return {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in wanted}


async def _read_body(receive: Receive) -> bytes:
    """The whole body; past the limit, a 413 before the rest is read."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_START_BODY_BYTES:
            raise PayloadTooLarge(
                f"Start body is over {MAX_START_BODY_BYTES} bytes; the limit is 1 MB"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
