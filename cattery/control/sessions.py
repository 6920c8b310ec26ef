"""Starting sessions: the one path every start takes, whoever asks for it.

``POST /v1/public/{agent}/start``, ``cattery dev``'s ``/start`` and ``/api/offer``, Daily's
dial-in webhook, a carrier's or a generic client's WebSocket and a WhatsApp call all come
to ``start``: the agent's target (its ready pool) → an instance from the pool (a full pool
is ``AtCapacity``, which goes on to the caller to refuse in its own way, and may be
recorded as a session that ended before its bot started) → a Daily room when asked → the
supervisor, which records the session and runs it by dispatch (``POST /bot``) or by a
connection bridged to the instance → the instance released if anything before that fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, ValidationError

from cattery import jsonlimits
from cattery.backends.base import InstanceFailed, InstanceStartTimeout
from cattery.contract import START_WAIT_HEADER
from cattery.control.agents import agent_key, lookup
from cattery.control.daily import daily_client, open_session_room
from cattery.control.logrouter import InstanceContext
from cattery.control.state import ControlState
from cattery.control.supervisor import Connect, LiveSession, NewSession
from cattery.control.wstokens import GENERIC, telephony_use
from cattery.errors import (
    AgentNotFound,
    AgentStartFailed,
    AtCapacity,
    CallerGone,
    CatteryError,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    StartTimeout,
    without_detail,
)
from cattery.pools.options import Lease
from cattery.pools.pool import Pool
from cattery.store import repositories as repo
from cattery.store.models import EndState, Organization

MAX_START_BODY_BYTES = 1_000_000
#: completes once the caller of a start has gone (its connection closed)
Gone = Callable[[], Awaitable[None]]
CARRIERS = ("twilio", "telnyx", "plivo", "exotel")
#: the ``transport`` values of a start that hands back a WebSocket URL and a token
WS_START_TRANSPORTS = frozenset({"websocket", *CARRIERS})
#: the transports a session dispatched with ``POST /bot`` is recorded with
DISPATCH_TRANSPORTS = frozenset({"webrtc", "daily", "websocket"})
#: Pipecat Cloud's limit on a websocket start's body (JSON), 413 beyond
MAX_WS_BODY_BYTES = 4096
#: Pipecat Cloud's documented ``transport`` values, and the carriers' (a WebSocket start)
START_TRANSPORTS = ("daily", "webrtc", "websocket", *CARRIERS)


class StartRequest(BaseModel):
    """A start's body, as Pipecat Cloud's clients send it."""

    model_config = ConfigDict(extra="allow")
    createDailyRoom: bool = False
    dailyRoomProperties: dict[str, Any] | None = None
    dailyMeetingTokenProperties: dict[str, Any] | None = None
    enableDefaultIceServers: bool = False
    transport: str | None = None
    body: Any = None


def parse_start_request(raw: bytes) -> StartRequest:
    """A start's raw body, checked: at most 1 MB of JSON object (empty: the defaults)."""
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


@dataclass(frozen=True)
class Target:
    """The agent a start is for, and the pool its instance comes from."""

    organization_id: str
    agent_id: str
    deployment_id: str
    agent_key: str
    max_session_seconds: int
    pool: Pool
    #: the deployment's ``websocketAuth``: ``token`` makes its carriers' WebSockets need one
    websocket_auth: str | None = None
    #: how long a start may wait for an instance when the pool is full
    start_queue_seconds: float = 0.0


async def target(state: ControlState, org: Organization, name: str) -> Target:
    """Agent ``name``'s target, once its deployment is ready to take sessions.

    No database session is held (the lookup reads in a short one of its own, and only
    when the agent is not in memory): a burst of starts waiting for instances must not
    hold the connections their session records then need.
    """
    agent = await lookup(state, org, name)
    if agent.deployment_id is None or agent.max_session_duration is None:
        raise ServiceUnavailable(f"Agent {name!r} has no deployment")
    status = await state.deployer.wait(agent.deployment_id)
    key = agent_key(org, name)
    pool = state.pools.get(key)
    deployment_id = agent.deployment_id
    if status.errors:
        if pool is None or pool.spec.deployment_id == deployment_id:
            raise ServiceUnavailable(
                f"Agent {name!r} is not ready: its deployment failed (see its status)"
            )
        deployment_id = pool.spec.deployment_id  # the previous deployment still serves
    if pool is None:
        raise ServiceUnavailable(f"Agent {name!r} is not ready")
    return Target(
        organization_id=org.id,
        agent_id=agent.agent_id,
        deployment_id=deployment_id,
        agent_key=key,
        max_session_seconds=agent.max_session_duration,
        pool=pool,
        websocket_auth=agent.websocket_auth,
        start_queue_seconds=agent.start_queue_seconds,
    )


async def target_of_host(state: ControlState, service_host: str) -> Target:
    """The target of the agent ``AGENT.ORG`` names (a carrier's ``serviceHost``)."""
    agent_name, _, org_name = service_host.partition(".")
    if not agent_name or not org_name:
        raise InvalidRequest(f"serviceHost must be AGENT.ORG, not {service_host!r}")
    async with state.sessionmaker() as db:
        org = await repo.get_organization_by_name(db, org_name)
    if org is None:
        raise AgentNotFound(f"Agent {service_host!r} not found")
    return await target(state, org, agent_name)


@dataclass(frozen=True)
class RoomRequest:
    """A Daily room to make for the session (``createDailyRoom``)."""

    room_properties: dict[str, Any] | None = None
    token_properties: dict[str, Any] | None = None


@dataclass(frozen=True)
class Started:
    """A session that has started: the live session, and its Daily room if one was made."""

    live: LiveSession
    room_url: str | None = None
    client_token: str | None = None


async def start(
    state: ControlState,
    target: Target,
    *,
    transport: str | None,
    requested_at: float,
    session_id: str | None = None,
    body: Any = None,
    room: RoomRequest | None = None,
    connect: Connect | None = None,
    record_refusal: bool = True,
    wait: float = 0.0,
    gone: Gone | None = None,
) -> Started:
    """A session on an instance from ``target``'s pool.

    With ``connect`` the session's lifetime is that connection to the instance (a bridge);
    without, it is dispatched with ``POST /bot`` carrying ``body``. A full pool raises
    ``AtCapacity`` (recorded as a refused session unless ``record_refusal`` is False);
    anything failing after the instance was taken releases it. A full pool may make the
    start wait ``wait`` seconds in the pool's queue, unless its caller is ``gone`` first.
    """
    daily = daily_client(state) if room is not None else None  # a 400 before anything
    if room is not None:
        transport = "daily"
    session_id = session_id or str(uuid.uuid4())
    try:
        with state.tracing.span("acquire"):
            lease = await acquire_waiting(target.pool, wait, gone)
    except AtCapacity:
        if record_refusal:
            await record_ended(state, target, session_id, transport)
        raise
    except InstanceFailed as exc:
        raise await _failed_start(state, target, session_id, transport, exc) from exc
    except CatteryError as exc:
        if exc.status_code < 500:
            raise
        # a backend's refusal (an engine that is down, a region with no node): the caller
        # gets its kind and code; its text stays in the server's log
        logger.bind(session_id=session_id).error(f"No instance for a start: {exc.message}")
        raise without_detail(exc) from exc
    try:
        opened = None
        if daily is not None and room is not None:
            opened = await open_session_room(
                daily,
                max_session_seconds=target.max_session_seconds,
                room_properties=room.room_properties,
                token_properties=room.token_properties,
            )
        new = NewSession(
            organization_id=target.organization_id,
            agent_id=target.agent_id,
            agent_key=target.agent_key,
            deployment_id=target.deployment_id,
            handle=lease.handle,
            cold_start=lease.cold_start,
            release=target.pool.release,
            max_session_seconds=target.max_session_seconds,
            transport=transport,
            session_id=session_id,
            requested_at=requested_at,
        )
        if connect is not None:
            live = await state.supervisor.bridge(new, connect=connect)
        else:
            with state.tracing.span("dispatch"):
                new = replace(new, traceparent=state.tracing.traceparent())
                body = body if body is not None else {}
                live = await state.supervisor.dispatch(new, body=body, daily=opened)
    except BaseException:
        await target.pool.release(lease.handle)
        raise
    if opened is None:
        return Started(live)
    return Started(live, opened.room_url, opened.client_token)


async def acquire_waiting(pool: Pool, wait: float, gone: Gone | None) -> Lease:
    """An instance from ``pool``; at capacity, a place in its queue for up to ``wait``
    seconds, given up as soon as the caller is ``gone`` (it is then never served)."""
    if wait <= 0 or gone is None:
        return await pool.acquire(wait)
    acquiring = asyncio.ensure_future(pool.acquire(wait))
    watching = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({acquiring, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not acquiring.done():
            acquiring.cancel()
    try:
        lease = await acquiring
    except asyncio.CancelledError:
        if watching.cancelled() or not watching.done():
            raise  # we were cancelled ourselves
        raise CallerGone("The caller left while waiting for an instance") from None
    if watching.done() and not watching.cancelled():
        await pool.release(lease.handle)  # served just as it left: nobody to start for
        raise CallerGone("The caller left while waiting for an instance")
    return lease


def parse_start_wait(value: str | None) -> float | None:
    """``X-Cattery-Start-Wait``: the seconds a start may wait for an instance (capped by
    the agent's ``startQueueSeconds``); None when not sent."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise InvalidRequest(f"{START_WAIT_HEADER} must be a number of seconds, not {value!r}")
    return seconds


def start_budget(target: Target, asked: float | None) -> float:
    """How long a start may wait: what it asked for, within the agent's setting."""
    allowed = target.start_queue_seconds
    return allowed if asked is None else min(asked, allowed)


async def _failed_start(
    state: ControlState,
    target: Target,
    session_id: str,
    transport: str | None,
    exc: InstanceFailed,
) -> CatteryError:
    """The instance a start waited for failed: the session is recorded with its end state,
    the instance's output becomes its log lines, and the caller's error says where to look
    (the traceback itself is the agent owner's to read, not an app's)."""
    timed_out = isinstance(exc, InstanceStartTimeout)
    end_state = EndState.AGENT_START_TIMEOUT if timed_out else EndState.AGENT_ERROR
    logger.bind(session_id=session_id).error(f"The session's instance failed to start: {exc}")
    if exc.instance_id is not None:
        context = InstanceContext(
            target.organization_id, target.agent_id, target.deployment_id, session_id
        )
        state.router.bind(exc.instance_id, context)
    await record_ended(state, target, session_id, transport, end_state)
    where = f"its log lines are session {session_id}'s"
    if timed_out:
        return StartTimeout(f"The agent's instance did not start in time; {where}")
    return AgentStartFailed(f"The agent's instance failed to start; {where}")


async def record_ended(
    state: ControlState,
    target: Target,
    session_id: str,
    transport: str | None,
    end_state: EndState = EndState.ENDED_BEFORE_AGENT_START,
) -> None:
    """A start that got no running instance: a session that ended before its bot started
    (the pool was full), or whose instance failed to start.

    Never raises: the caller is refusing the start already, and that must still happen.
    """
    if end_state == EndState.ENDED_BEFORE_AGENT_START:
        logger.warning(f"Start refused: no instance; recorded as session {session_id}")
    try:
        async with state.sessionmaker.begin() as db:
            await repo.create_session(
                db,
                organization_id=target.organization_id,
                agent_id=target.agent_id,
                deployment_id=target.deployment_id,
                session_id=session_id,
                transport=transport,
            )
            await repo.end_session(db, session_id, end_state)
    except Exception as exc:
        logger.opt(exception=exc).error("Failed to record a refused start")


# -- the answers of a start request ------------------------------------------------------------


async def answer_start(
    state: ControlState,
    org: Organization,
    name: str,
    req: StartRequest,
    *,
    base_url: str,
    requested_at: float,
    start_wait: float | None = None,
    gone: Gone | None = None,
) -> dict[str, Any]:
    """Any start request's answer: for a WebSocket (``websocket``, a carrier's name) its URL
    and a token, as the client or carrier connects later; for any other transport a session
    now. ``base_url`` is the control plane's own, as the caller reached it; ``start_wait``
    the caller's own bound on waiting for an instance, and ``gone`` says when it left."""
    if req.transport in WS_START_TRANSPORTS:
        return await ws_start(state, org, name, req.transport, req.body, base_url)
    return await start_now(
        state, org, name, req, requested_at=requested_at, start_wait=start_wait, gone=gone
    )


async def start_now(
    state: ControlState,
    org: Organization,
    name: str,
    req: StartRequest,
    *,
    requested_at: float,
    record_refusal: bool = False,
    start_wait: float | None = None,
    gone: Gone | None = None,
) -> dict[str, Any]:
    """A session of agent ``name`` dispatched now; Pipecat's ``StartBotResult`` shape:
    ``sessionId``, the Daily room when one was made, for WebRTC the ICE servers to use."""
    with state.tracing.span("start", agent=agent_key(org, name)):
        found = await target(state, org, name)
        room = None
        if req.createDailyRoom:
            room = RoomRequest(req.dailyRoomProperties, req.dailyMeetingTokenProperties)
        started = await start(
            state,
            found,
            transport=req.transport if req.transport in DISPATCH_TRANSPORTS else None,
            requested_at=requested_at,
            body=req.body,
            room=room,
            record_refusal=record_refusal,
            wait=start_budget(found, start_wait),
            gone=gone,
        )
    response: dict[str, Any] = {"sessionId": started.live.id}
    if started.room_url is not None:
        response["dailyRoom"], response["dailyToken"] = started.room_url, started.client_token
    if started.live.transport == "webrtc":
        urls = state.settings.ice_urls if req.enableDefaultIceServers else []
        response["iceConfig"] = {"iceServers": [{"urls": url} for url in urls]}
    return response


async def ws_start(
    state: ControlState,
    org: Organization,
    name: str,
    transport: str,
    body: Any,
    base_url: str,
) -> dict[str, Any]:
    """A start whose connection comes later: its WebSocket URL and a token for it.

    ``websocket``: ``wsUrl`` of ``/ws/generic/AGENT.ORG``, a ``token`` for one connection
    within 300 s, the session id that connection gets, and the body as base64 (JSON of at
    most 4 KB) to send back as ``?body=``. No instance is taken now: the connection takes
    one, as on Pipecat Cloud, so an unused token holds nothing. A carrier's name: the
    carrier's media-stream URL and a token to put in it (``/ws/{carrier}/{token}``).
    """
    await lookup(state, org, name)  # 404 for an unknown agent
    service_host = f"{name}.{org.name}"
    scheme = "wss" if base_url.startswith(("https:", "wss:")) else "ws"
    base = scheme + base_url[base_url.index(":") :].rstrip("/")
    if transport in CARRIERS:
        return {
            "wsUrl": f"{base}/ws/{transport}?serviceHost={service_host}",
            "token": state.ws_tokens.issue(service_host, telephony_use(transport)),
        }
    response: dict[str, Any] = {}
    if body is not None:
        raw = json.dumps(body, separators=(",", ":")).encode()
        if len(raw) > MAX_WS_BODY_BYTES:
            raise PayloadTooLarge(
                f"A websocket start's body is {len(raw)} bytes of JSON; the limit is 4 KB"
            )
        response["body"] = base64.b64encode(raw).decode()
    session_id = str(uuid.uuid4())
    return {
        "sessionId": session_id,
        "wsUrl": f"{base}/ws/generic/{service_host}",
        "token": state.ws_tokens.issue(service_host, GENERIC, session_id=session_id),
        **response,
    }
