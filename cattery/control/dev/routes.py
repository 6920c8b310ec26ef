"""The development runner's routes, served by the control plane for ``settings.dev.agent``.

=========================================  ==============================================
``POST /start``                            a session; Pipecat's ``StartBotResult`` shape
``/sessions/{id}/{path}``                  the session's instance, as the Session API
``POST``/``PATCH /api/offer``              an offer with no session yet starts a WebRTC
                                           one; later ones find it by ``pc_id``
``GET /status``                            readiness and the transports ``/start`` takes
``/client/``, ``GET /``                    the prebuilt client UI; ``/`` redirects there
``POST /``, ``WS /ws``, ``WS /ws/{tok}``    a carrier's call webhook and media stream
                                           (``dev/telephony.py``)
=========================================  ==============================================

Every start goes through ``sessions.answer_start``, as the public API's: a dev start is
exactly the start ``/v1/public/{agent}/start`` would make: a session now, or for
``websocket`` and the carriers a URL and token for the connection that will make one.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.contract import START_WAIT_HEADER
from cattery.control.deps import DB, State, base_url, disconnected
from cattery.control.dev.client import add_client_routes
from cattery.control.dev.peers import PeerSessions
from cattery.control.dev.telephony import add_telephony_routes
from cattery.control.forwarding import METHODS, forward, session_path
from cattery.control.sessions import (
    CARRIERS,
    StartRequest,
    answer_start,
    parse_start_request,
    parse_start_wait,
)
from cattery.control.state import ControlState
from cattery.errors import InvalidRequest, SessionNotFound
from cattery.runtime.bodies import json_object
from cattery.store import repositories as repo

#: the transports ``POST /start`` takes here; webrtc is the default
TRANSPORTS = ("webrtc", "daily", "websocket", *CARRIERS)
OFFER_PATH = "api/offer"


def choose_transport(req: StartRequest, only: str | None) -> str:
    """As Pipecat's runner: ``transport``, else ``daily`` for ``createDailyRoom``, else the
    ``-t`` one (``only``), else webrtc; with ``-t``, no other."""
    transport = req.transport or ("daily" if req.createDailyRoom else only or "webrtc")
    if transport not in TRANSPORTS:
        raise InvalidRequest(
            f"Transport {transport!r} is not available in cattery dev; "
            f"use one of: {', '.join(TRANSPORTS)}"
        )
    if only is not None and transport != only:
        raise InvalidRequest(
            f"Transport {transport!r} is not allowed: cattery dev was started with -t {only}"
        )
    return transport


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    peers = PeerSessions()

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/client/")

    @router.get("/status")
    async def status(state: State, db: DB) -> dict[str, Any]:
        only = state.settings.dev.transport
        transports = [only] if only else list(TRANSPORTS)
        return {"status": await _readiness(state, db), "transports": transports}

    @router.post("/start")
    async def start(request: Request, state: State, db: DB) -> dict[str, Any]:
        requested_at = time.monotonic()
        req = parse_start_request(await request.body())
        transport = choose_transport(req, state.settings.dev.transport)
        req = req.model_copy(update={"transport": transport})
        return await _start(state, db, req, request, requested_at)

    @router.api_route("/sessions/{session_id}/{path:path}", methods=METHODS)
    async def session_route(request: Request, state: State, session_id: str, path: str) -> Response:
        live = state.supervisor.get(session_id)
        if live is None or live.agent_key != _dev_agent_key(state):
            raise SessionNotFound()
        path = session_path(path)
        response = await forward(state, live, request, path)
        if path == OFFER_PATH and request.method == "POST":
            peers.remember(response, live)
        return response

    @router.post("/api/offer")
    async def offer(request: Request, state: State, db: DB) -> Response:
        data = await json_object(request)
        live = peers.live(data.get("pc_id"), state.supervisor)
        if live is not None:  # a renegotiation of a live peer connection
            return await forward(state, live, request, OFFER_PATH)
        if not isinstance(data.get("sdp"), str) or data.get("type") != "offer":
            raise InvalidRequest("Invalid WebRTC offer: sdp (a string) and type 'offer' are needed")
        body = data.get("request_data", data.get("requestData"))
        req = StartRequest(transport="webrtc", body=body)
        started = await _start(state, db, req, request, time.monotonic())
        live = state.supervisor.get(started["sessionId"])
        if live is None:
            raise SessionNotFound(f"Session {started['sessionId']} ended before its offer")
        response = await forward(state, live, request, OFFER_PATH)
        if response.status_code != 200:  # nobody else will ever offer for this session
            await state.supervisor.stop(live.id)
            return response
        peers.remember(response, live)
        return response

    @router.patch("/api/offer")
    async def ice_candidates(request: Request, state: State) -> Response:
        data = await json_object(request)
        pc_id = data.get("pc_id")
        if not isinstance(pc_id, str):
            raise InvalidRequest("pc_id (a string) is required")
        live = peers.live(pc_id, state.supervisor)
        if live is None:
            raise SessionNotFound(f"No live session has peer connection {pc_id!r}")
        return await forward(state, live, request, OFFER_PATH)

    add_client_routes(router)
    add_telephony_routes(router)
    return router


async def _start(
    state: ControlState,
    db: AsyncSession,
    req: StartRequest,
    request: Request,
    requested_at: float,
) -> dict[str, Any]:
    """A start of the dev agent, answered as ``/v1/public/{agent}/start`` answers it."""
    org = await repo.get_organization_by_name(db, state.settings.organization)
    assert org is not None, "bootstrap creates the organization"
    name = state.settings.dev.agent
    assert name is not None, "the dev routes exist only in dev mode"
    return await answer_start(
        state,
        org,
        name,
        req,
        base_url=base_url(request),
        requested_at=requested_at,
        start_wait=parse_start_wait(request.headers.get(START_WAIT_HEADER)),
        gone=lambda: disconnected(request),
    )


def _dev_agent_key(state: ControlState) -> str:
    """The dev agent's pool key, as ``agent_key()`` spells it for the dev organization."""
    return f"{state.settings.organization}/{state.settings.dev.agent}"


async def _readiness(state: ControlState, db: AsyncSession) -> str:
    """``ready`` once the dev agent's deployment is; ``starting`` before, ``error`` if failed."""
    org = await repo.get_organization_by_name(db, state.settings.organization)
    agent = (
        await repo.get_agent(db, org.id, state.settings.dev.agent or "")
        if org is not None
        else None
    )
    if agent is None or agent.active_deployment_id is None:
        return "starting"
    deployed = state.deployer.status(agent.active_deployment_id)
    if deployed.errors:
        return "error"
    return "ready" if deployed.ready else "starting"
