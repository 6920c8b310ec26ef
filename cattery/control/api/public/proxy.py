"""The Session API: ``/v1/public/{agent}/sessions/{id}/{path}`` reaches the session's instance."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request, Response

from cattery.control.deps import PublicCaller, State
from cattery.errors import SessionNotFound
from cattery.runtime.options import INSTANCE_TOKEN_HEADER

DROPPED_REQUEST_HEADERS = {"host", "content-length", "authorization", "connection", "keep-alive"}
DROPPED_RESPONSE_HEADERS = {"content-length", "connection", "keep-alive", "transfer-encoding"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
PROXY_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


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
            or live.agent_key != f"{caller.organization.name}/{name}"
        ):
            raise SessionNotFound()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in DROPPED_REQUEST_HEADERS
        }
        headers[INSTANCE_TOKEN_HEADER] = live.handle.token
        headers["x-daily-session-id"] = live.id
        url = f"{live.handle.address}/{path}"
        if request.url.query:
            url += "?" + request.url.query
        try:
            upstream = await state.proxy_http.request(
                request.method,
                url,
                headers=headers,
                content=await request.body(),
                timeout=PROXY_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise SessionNotFound(f"Session {session_id} is not reachable: {exc!r}") from exc
        return Response(
            content=upstream.content,
            status_code=upstream.status_code,
            headers={
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in DROPPED_RESPONSE_HEADERS
            },
        )

    return router
