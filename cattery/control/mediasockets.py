"""Media WebSockets: carriers' calls and generic clients, each joined to an instance's ``/ws``.

The routes (``api/public/telephony.py``, ``cattery dev``'s ``/ws``) hand an accepted
socket to ``serve_websocket``, which admits the call and starts its session.

====================================  ==================================================
``WS /ws/{carrier}``                  twilio, telnyx, plivo, exotel; the agent is named by
``WS /ws/{carrier}/{token}``          ``?serviceHost=AGENT.ORG``, or by Twilio's
                                      ``_pipecatCloudServiceHost`` custom parameter in its
                                      ``start`` message, or by the token
``WS /ws/generic/{AGENT.ORG}``        a client started with ``transport: "websocket"``;
``WS /ws/generic/{AGENT.ORG}/{tok}``  its token is required; ``?body=`` reaches the bot
====================================  ==================================================

Every connection is a session: an instance from the agent's pool (a full pool closes the
socket with 1013, "try again later", and the refused call is recorded as a session that
``ended_before_agent_start``), a session record, and a bridge to the instance's ``/ws``
that replays the messages read before the agent was known. There is no API key on these
routes: carriers cannot send one. Tokens (``?token=``, ``Authorization: Bearer``, or the
path) are required on ``/ws/generic`` and, with ``CATTERY_WS_AUTH=token``, on the
carriers' routes; ``POST /v1/public/{agent}/start`` issues them (see ``ws_start``).

Close codes: 4003 missing, bad, expired or replayed token; 4400 no or bad agent name;
4404 unknown agent; 4413 body too large; 1013 at capacity or not ready; 1011 the instance
failed. The reason names the error as the HTTP API's ``code``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from fastapi import WebSocket
from loguru import logger

from cattery import jsonlimits
from cattery.contract import (
    INSTANCE_TOKEN_HEADER,
    MAX_SESSION_HEADER,
    PLAIN_WEBSOCKET,
    SESSION_ID_HEADER,
    TRANSPORT_TYPE_HEADER,
)
from cattery.control.sessions import CARRIERS, Target, start, target_of_host
from cattery.control.state import ControlState
from cattery.control.supervisor import LiveSession
from cattery.control.wsbridge import (
    INTERNAL_ERROR,
    TRY_AGAIN_LATER,
    Message,
    bridge,
    close_reason,
    close_websocket,
)
from cattery.control.wstokens import GENERIC, WsClaims, telephony_use
from cattery.errors import (
    AtCapacity,
    CatteryError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
)
from cattery.integrations.telephony import SERVICE_HOST_PARAMETER, carrier_of, named_service_host

#: the route of a call whose carrier its first messages tell (``cattery dev``'s ``/ws``)
ANY_CARRIER = "any-carrier"
#: the base64 ``?body=`` a connection may carry (4 KB of JSON, base64, with room to spare)
MAX_WS_BODY_CHARS = 8192
#: a carrier names the agent in its first messages or not at all
FIRST_MESSAGES_SECONDS = 10.0
MAX_FIRST_MESSAGES = 4
AUTH_FAILED = 4003


def close_code(exc: CatteryError) -> int:
    """The WebSocket close code that says what the HTTP API would say with a status."""
    if isinstance(exc, Unauthorized | Forbidden):
        return AUTH_FAILED
    if isinstance(exc, AtCapacity | ServiceUnavailable):
        return TRY_AGAIN_LATER
    if 400 <= exc.status_code < 500:
        return 4000 + exc.status_code
    return INTERNAL_ERROR


@dataclass
class Call:
    """An accepted WebSocket on its way to an instance."""

    route: str
    service_host: str
    session_id: str
    #: messages read while looking for the agent's name, for the instance first
    replay: list[Message] = field(default_factory=list)
    #: the ``?body=`` for the instance, base64 as the connection sent it
    body: str | None = None
    #: whether the connection came with a valid token from a start
    authenticated: bool = False


class _Gone(Exception):
    """The peer closed before the call was placed."""


async def serve_websocket(
    state: ControlState,
    websocket: WebSocket,
    route: str,
    *,
    service_host: str | None = None,
    path_token: str | None = None,
) -> None:
    """One carrier's call or generic client, from the handshake until the session ends.

    ``route`` is ``generic`` or a carrier's name; ``service_host`` (``AGENT.ORG``) names the
    agent when the URL does not (the generic route's path, or another entry point's own).
    """
    requested_at = time.monotonic()
    await websocket.accept()
    try:
        call = await _admit(state, websocket, route, service_host, path_token)
        with logger.contextualize(session_id=call.session_id):
            found = await target_of_host(state, call.service_host)
            if found.websocket_auth == "token" and not call.authenticated:
                raise Forbidden(
                    "This agent's WebSockets need a token from POST /v1/public/{agent}/start "
                    "(its websocketAuth is token)"
                )
            live = await _place(state, websocket, call, found, requested_at)
    except _Gone:
        logger.info(f"A {route} WebSocket closed before its call was placed")
        return
    except CatteryError as exc:
        logger.warning(f"{route} WebSocket refused: {exc.code}: {exc.message}")
        reason = close_reason(f"{exc.code}: {exc.public_message}")
        await close_websocket(websocket, close_code(exc), reason)
        return
    # The session's task owns the bridge; this handler keeps the socket until it ends.
    await asyncio.gather(live.task, return_exceptions=True)  # type: ignore[arg-type]


async def _admit(
    state: ControlState,
    websocket: WebSocket,
    route: str,
    service_host: str | None,
    path_token: str | None,
) -> Call:
    """Who the call is for, checked: the agent's name, the token, the body."""
    if route not in (GENERIC, ANY_CARRIER, *CARRIERS):
        raise NotFound(f"No media WebSocket at /ws/{route}; use one of {', '.join(CARRIERS)}")
    token = path_token or _bearer(websocket) or websocket.query_params.get("token")
    claims = state.ws_tokens.check(token) if token else None
    if token and claims is None:
        raise Forbidden("Invalid, expired or already used WebSocket token")
    required = route == GENERIC or state.settings.ws_auth == "token"
    if required and claims is None:
        raise Forbidden("This WebSocket needs a token from POST /v1/public/{agent}/start")
    replay: list[Message] = []
    if route != GENERIC:
        service_host = service_host or websocket.query_params.get("serviceHost")
        if not service_host and claims is not None:
            service_host = claims.service_host
        if not service_host:
            service_host, replay = await _read_service_host(websocket)
    if route == ANY_CARRIER:
        route, replay = await _read_carrier(websocket, replay)
    assert service_host is not None
    if claims is not None:
        _use_token(state, claims, route, service_host)
    body = _raw_query_value(websocket, "body")
    if body is not None and len(body) > MAX_WS_BODY_CHARS:
        raise PayloadTooLarge(f"?body= is {len(body)} characters; the limit is {MAX_WS_BODY_CHARS}")
    session_id = claims.session_id if claims is not None and claims.session_id else None
    session_id = session_id or str(uuid.uuid4())
    return Call(route, service_host, session_id, replay, body, authenticated=claims is not None)


def _use_token(state: ControlState, claims: WsClaims, route: str, service_host: str) -> None:
    if claims.service_host != service_host:
        raise Forbidden("The WebSocket token is for another agent")
    if claims.use != (GENERIC if route == GENERIC else telephony_use(route)):
        raise Forbidden(f"The WebSocket token is not for /ws/{route}")
    if not state.ws_tokens.consume(claims):
        raise Forbidden("Invalid, expired or already used WebSocket token")


async def _read_service_host(websocket: WebSocket) -> tuple[str, list[Message]]:
    """Read the carrier's first messages until one names the agent (Twilio's ``start``)."""
    replay = await _read_first_messages(websocket, [], lambda data: bool(named_service_host(data)))
    for message in replay:
        found = named_service_host(_json_of(message))
        if found:
            return found, replay
    raise InvalidRequest(
        f"No agent named: add ?serviceHost=AGENT.ORG, or a {SERVICE_HOST_PARAMETER} parameter"
    )


async def _read_carrier(websocket: WebSocket, replay: list[Message]) -> tuple[str, list[Message]]:
    """The carrier of a call on a route that names none, told by its first messages.

    Every carrier opens with its ``start`` message, after at most a ``connected`` one;
    the reading stops at the first other message, so a client that is not a carrier (an
    eval harness) is not kept waiting. Not a carrier's stream: ``websocket``.
    """
    replay = await _read_first_messages(
        websocket, replay, lambda data: data.get("event") != "connected"
    )
    for message in replay:
        carrier = carrier_of(_json_of(message))
        if carrier:
            return carrier, replay
    return "websocket", replay


async def _read_first_messages(
    websocket: WebSocket, replay: list[Message], enough: Callable[[dict[str, Any]], bool]
) -> list[Message]:
    """``replay`` and the messages after it, until one is ``enough`` (at most four, 10 s)."""
    replay = list(replay)
    if any(enough(_json_of(message)) for message in replay):
        return replay
    try:
        async with asyncio.timeout(FIRST_MESSAGES_SECONDS):
            while len(replay) < MAX_FIRST_MESSAGES:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    raise _Gone()
                replay.append(message)
                if enough(_json_of(message)):
                    break
    except TimeoutError:
        pass
    return replay


async def _place(
    state: ControlState, websocket: WebSocket, call: Call, target: Target, requested_at: float
) -> LiveSession:
    """An instance for the call (or a recorded refusal), and the session bridged to it."""

    async def connect(live: LiveSession) -> str | None:
        headers = {
            INSTANCE_TOKEN_HEADER: live.handle.token,
            SESSION_ID_HEADER: live.id,
            MAX_SESSION_HEADER: str(target.max_session_seconds),
        }
        if call.route == GENERIC:  # a carrier's stream says who it is; a client does not
            headers[TRANSPORT_TYPE_HEADER] = PLAIN_WEBSOCKET
        url = live.handle.address.replace("http", "ws", 1) + "/ws"
        if call.body:
            url += "?body=" + quote(call.body, safe="")
        return await bridge(websocket, url, headers, call.replay)

    started = await start(
        state,
        target,
        connect=connect,
        transport="websocket" if call.route == GENERIC else call.route,
        session_id=call.session_id,
        requested_at=requested_at,
    )
    return started.live


def _json_of(message: Message) -> dict[str, Any]:
    """A text message's JSON object; anything else is an empty one."""
    text = message.get("text")
    if not text:
        return {}
    try:
        data = jsonlimits.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _bearer(websocket: WebSocket) -> str | None:
    scheme, _, token = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _raw_query_value(websocket: WebSocket, name: str) -> str | None:
    """A query value with only %-escapes undone: base64's ``+`` stays a ``+``."""
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if unquote(key) == name:
            return unquote(value)
    return None
