"""The Session API: ``/v1/public/{agent}/sessions/{id}/{path}`` reaches the session's instance."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Set as AbstractSet

import httpx
from fastapi import APIRouter, Request, Response

from cattery.control.api.private.services import agent_key
from cattery.control.deps import PublicCaller, State
from cattery.control.state import ControlState
from cattery.control.supervisor import LiveSession
from cattery.errors import SessionNotFound
from cattery.runtime.options import INSTANCE_TOKEN_HEADER

SESSION_ID_HEADER = "x-daily-session-id"
#: hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: the body is sent whole with its own length, the caller's key stays here, and the
#: instance token and session id are ours to set
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    INSTANCE_TOKEN_HEADER,
    SESSION_ID_HEADER,
}
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"content-length"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
PROXY_TIMEOUT = httpx.Timeout(60.0, connect=10.0)

Headers = list[tuple[str, str]]


def build_router() -> APIRouter:
    router = APIRouter()

    @router.api_route("/v1/public/{name}/sessions/{session_id}/{path:path}", methods=METHODS)
    async def proxy(
        request: Request, state: State, caller: PublicCaller, name: str, session_id: str, path: str
    ) -> Response:
        live = state.supervisor.get(session_id)
        if (
            live is None
            or live.organization_id != caller.organization.id
            or live.agent_key != agent_key(caller.organization, name)
        ):
            raise SessionNotFound()
        return await forward(state, live, request, path)

    return router


async def forward(state: ControlState, live: LiveSession, request: Request, path: str) -> Response:
    """``request`` sent on to ``path`` on the session's instance; the instance's answer as sent."""
    url = f"{live.handle.address}/{path}"
    if request.url.query:
        url += "?" + request.url.query
    outgoing = state.proxy_http.build_request(
        request.method,
        url,
        headers=_request_headers(request, live),
        content=await request.body(),
        timeout=PROXY_TIMEOUT,
    )
    try:
        upstream = await state.proxy_http.send(outgoing, stream=True)
        try:
            # As sent: a body the bot compressed stays compressed, with its encoding header.
            content = b"".join([chunk async for chunk in upstream.aiter_raw()])
        finally:
            await upstream.aclose()
    except httpx.HTTPError as exc:
        raise SessionNotFound(f"Session {live.id} is not reachable: {exc!r}") from exc
    return _response(upstream, content, head=request.method == "HEAD")


def _request_headers(request: Request, live: LiveSession) -> Headers:
    headers = _forwarded(request.headers.items(), DROPPED_REQUEST_HEADERS)
    headers.append((INSTANCE_TOKEN_HEADER, live.handle.token))
    headers.append((SESSION_ID_HEADER, live.id))
    return headers


def _response(upstream: httpx.Response, content: bytes, *, head: bool) -> Response:
    """The instance's answer as it sent it; repeated headers (Set-Cookie) stay separate."""
    dropped = DROPPED_RESPONSE_HEADERS
    if head:  # no body: the length is the one a GET would have
        dropped = dropped - {"content-length"}
    kept = _forwarded(upstream.headers.multi_items(), dropped)
    response = Response(content=content, status_code=upstream.status_code)
    names = {k.encode("latin-1") for k, _ in kept}
    response.raw_headers = [(k, v) for k, v in response.raw_headers if k not in names] + [
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in kept
    ]
    return response


def _forwarded(headers: Iterable[tuple[str, str]], dropped: AbstractSet[str]) -> Headers:
    """``headers`` without ``dropped`` ones and those the ``Connection`` header names."""
    pairs = [(k.lower(), v) for k, v in headers]
    named = {
        token.strip().lower()
        for k, v in pairs
        if k == "connection"
        for token in v.split(",")
        if token.strip()
    }
    return [(k, v) for k, v in pairs if k not in dropped and k not in named]
