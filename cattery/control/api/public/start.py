"""``POST /v1/public/{agent}/start``: a session on a fresh instance, or a 429 when full."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cattery import jsonlimits
from cattery.control.api.private.services import agent_key
from cattery.control.api.public.telephony import CARRIERS, WS_START_TRANSPORTS, ws_start
from cattery.control.daily import daily_client, open_session_room
from cattery.control.deps import DB, PublicCaller, State
from cattery.control.state import ControlState
from cattery.control.supervisor import NewSession
from cattery.errors import InvalidRequest, PayloadTooLarge, ServiceUnavailable
from cattery.store.models import Organization

MAX_START_BODY_BYTES = 1_000_000
#: Pipecat Cloud's documented ``transport`` values, and the carriers' (a WebSocket start)
START_TRANSPORTS = ("daily", "webrtc", "websocket", *CARRIERS)


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    createDailyRoom: bool = False
    dailyRoomProperties: dict[str, Any] | None = None
    dailyMeetingTokenProperties: dict[str, Any] | None = None
    enableDefaultIceServers: bool = False
    transport: str | None = None
    body: Any = None


async def read_start_request(request: Request) -> StartRequest:
    raw = await request.body()
    if len(raw) > MAX_START_BODY_BYTES:
        raise PayloadTooLarge(f"Start body is {len(raw)} bytes; the limit is 1 MB")
    if not raw.strip():
        return StartRequest()
    try:
        data = jsonlimits.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"Body must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("Body must be a JSON object")
    try:
        req = StartRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid start request: {exc.errors()[0]['msg']}") from exc
    if req.transport is not None and req.transport not in START_TRANSPORTS:
        raise InvalidRequest(
            f"Unknown transport {req.transport!r}: use one of {', '.join(START_TRANSPORTS)}"
        )
    return req


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/public/{name}/start")
    async def start(
        request: Request, state: State, db: DB, caller: PublicCaller, name: str
    ) -> dict:
        requested_at = time.monotonic()
        req = await read_start_request(request)
        org = caller.organization
        return await answer_start(state, db, org, name, req, request, requested_at=requested_at)

    return router


async def answer_start(
    state: ControlState,
    db: AsyncSession,
    org: Organization,
    name: str,
    req: StartRequest,
    request: Request,
    *,
    requested_at: float,
) -> dict[str, Any]:
    """Any start's answer: for a WebSocket (``websocket``, a carrier's name) its URL and a
    token, as the client or carrier connects later; for any other transport a session now."""
    if req.transport in WS_START_TRANSPORTS:
        return await ws_start(state, db, org, name, req.transport, req.body, request)
    return await start_session(state, db, org, name, req, requested_at=requested_at)


async def start_session(
    state: ControlState,
    db: AsyncSession,
    org: Organization,
    name: str,
    req: StartRequest,
    *,
    requested_at: float,
) -> dict[str, Any]:
    """A session of agent ``name`` on an instance from its pool: every start comes here.

    Returns the start's answer (Pipecat's ``StartBotResult`` shape): ``sessionId``, and
    for WebRTC the ICE servers the client should use.
    """
    with state.tracing.span("start", agent=agent_key(org, name)):
        return await _start_session(state, db, org, name, req, requested_at=requested_at)


async def _start_session(
    state: ControlState,
    db: AsyncSession,
    org: Organization,
    name: str,
    req: StartRequest,
    *,
    requested_at: float,
) -> dict[str, Any]:
    agent = await state.lookups.agent(db, org, name)
    if agent.deployment_id is None or agent.max_session_duration is None:
        raise ServiceUnavailable(f"Agent {name!r} has no deployment")
    max_session_seconds = agent.max_session_duration
    status = await state.deployer.wait(agent.deployment_id)
    if status.errors:
        raise ServiceUnavailable(f"Agent {name!r} is not ready: {status.errors[0]['message']}")
    daily = daily_client(state) if req.createDailyRoom else None
    key = agent_key(org, name)
    pool = state.pools.get(key)
    if pool is None:
        raise ServiceUnavailable(f"Agent {name!r} is not ready")
    # Waiting for an instance must not hold a database connection: a burst of starts would
    # drain the connection pool and starve the session records it then has to write.
    await db.commit()
    with state.tracing.span("acquire"):
        lease = await pool.acquire()
    room = None
    if daily is not None:
        room = await open_session_room(
            daily,
            handle=lease.handle,
            release=pool.release,
            max_session_seconds=max_session_seconds,
            room_properties=req.dailyRoomProperties,
            token_properties=req.dailyMeetingTokenProperties,
        )
    transport = req.transport if req.transport in ("webrtc", "daily", "websocket") else None
    if room is not None:
        transport = "daily"
    body = req.body if req.body is not None else {}
    with state.tracing.span("dispatch"):
        new = NewSession(
            organization_id=org.id,
            agent_id=agent.agent_id,
            agent_key=key,
            deployment_id=agent.deployment_id,
            handle=lease.handle,
            cold_start=lease.cold_start,
            release=pool.release,
            max_session_seconds=max_session_seconds,
            transport=transport,
            requested_at=requested_at,
            traceparent=state.tracing.traceparent(),
        )
        live = await state.supervisor.dispatch(new, body=body, daily=room)
    response: dict[str, Any] = {"sessionId": live.id}
    if room is not None:
        response["dailyRoom"], response["dailyToken"] = room.room_url, room.client_token
    if transport == "webrtc":
        urls = state.settings.ice_urls if req.enableDefaultIceServers else []
        response["iceConfig"] = {"iceServers": [{"urls": url} for url in urls]}
    return response
