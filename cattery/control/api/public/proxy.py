"""The Session API: ``/v1/public/{agent}/sessions/{id}/{path}`` reaches the session's instance.

What may cross (paths, headers, cookies) and how is ``control/forwarding.py``'s.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cattery.control.agents import agent_key
from cattery.control.deps import PublicCaller, State
from cattery.control.forwarding import METHODS, forward, proxy_lifespan, session_path
from cattery.errors import SessionNotFound


def build_router() -> APIRouter:
    router = APIRouter(lifespan=proxy_lifespan)

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
        return await forward(state, live, request, session_path(path))

    return router
