"""``POST /bot``, the request that runs a dispatched session, and the short way to it.

A warm start waits for this request to reach ``bot()``, and on an instance that sat idle
(cold caches) every layer in between costs: FastAPI's and Starlette's middleware, the
router, a ``Request``. So what uvicorn serves is ``RuntimeEntry``: ``POST /bot`` goes
straight to its endpoint, behind the same guard, unless the bot changed what stands in
front of it (a middleware of its own, or its own ``/bot`` route); everything else goes
through the app. The endpoint is the app's ``/bot`` route as well, so both ways answer
alike.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, NamedTuple

from loguru import logger
from pipecatcloud.agent import DailySessionArguments, PipecatSessionArguments
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cattery.contract import (
    END_STATE_HEADER,
    MAX_SESSION_HEADER,
    ROOM_TOKEN_HEADER,
    ROOM_URL_HEADER,
    SESSION_ID_HEADER,
    TRACEPARENT_HEADER,
    TRANSPORT_TYPE_HEADER,
)
from cattery.errors import CatteryError, InvalidRequest
from cattery.runtime import tracing
from cattery.runtime.bodies import parse_json_object
from cattery.runtime.guard import InstanceToken, refusal, refuse
from cattery.runtime.sessions import SessionRunner
from cattery.runtime.webrtc import WebRTCSessions

_WANTED = {
    name.lower().encode(): name
    for name in (
        ROOM_URL_HEADER,
        ROOM_TOKEN_HEADER,
        SESSION_ID_HEADER,
        TRANSPORT_TYPE_HEADER,
        MAX_SESSION_HEADER,
        TRACEPARENT_HEADER,
    )
}
_END_STATE = END_STATE_HEADER.lower().encode()
_BOT_SCOPE = {"type": "http", "path": "/bot", "method": "POST", "root_path": "", "headers": []}


def parse_max_seconds(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        seconds = float(value)
    except ValueError as exc:
        raise InvalidRequest(f"X-PCC-Max-Session-Seconds must be a number, not {value!r}") from exc
    if seconds <= 0:
        raise InvalidRequest("X-PCC-Max-Session-Seconds must be positive")
    return seconds


class BotEndpoint:
    """The ASGI endpoint of ``POST /bot``: answers once the session is over, with its end
    state in a header; a bad request is a 400 in the platform's shape."""

    def __init__(self, runner: SessionRunner, webrtc: WebRTCSessions) -> None:
        self._runner = runner
        self._webrtc = webrtc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await _read_body(receive)
        if raw is None:
            return  # the caller left before sending all of it: no session
        try:
            state = await self._run(_headers(scope), raw)
        except CatteryError as exc:
            await _send_json(send, exc.status_code, {"code": exc.code, "error": exc.message})
            return
        await _send_json(send, 200, {}, [(_END_STATE, state.encode())])

    async def _run(self, headers: dict[str, str], raw: bytes) -> str:
        session = SessionRequest.read(headers, raw)
        session_id = session.args.session_id
        with tracing.session_span(headers.get(TRACEPARENT_HEADER), session_id):
            if headers.get(TRANSPORT_TYPE_HEADER) == "webrtc" and not session.room_url:
                with logger.contextualize(session_id=session_id):
                    state = await self._webrtc.wait_for_offer(
                        session_id, session.body, session.max_seconds
                    )
            else:
                state = await self._runner.run(session.args, max_seconds=session.max_seconds)
        await tracing.flush()
        return state.value


class SessionRequest(NamedTuple):
    """What a ``POST /bot`` asks for: ``bot()``'s arguments, and the session's limit."""

    args: Any
    body: dict[str, Any]
    max_seconds: float | None
    room_url: str | None

    @classmethod
    def read(cls, headers: dict[str, str], raw: bytes) -> SessionRequest:
        body = parse_json_object(raw, empty_ok=True)
        max_seconds = parse_max_seconds(headers.get(MAX_SESSION_HEADER))
        room_url = headers.get(ROOM_URL_HEADER)
        room_token = headers.get(ROOM_TOKEN_HEADER)
        session_id = headers.get(SESSION_ID_HEADER) or str(uuid.uuid4())
        if room_url and room_token:
            args: Any = DailySessionArguments(
                session_id=session_id, room_url=room_url, token=room_token, body=body
            )
        else:
            args = PipecatSessionArguments(session_id=session_id, body=body)
        return cls(args, body, max_seconds, room_url)


def rehearse_reading() -> None:
    """Read a session's request as ``POST /bot`` does, for nothing (``rehearsal.py``)."""
    raw = b'{"rehearsal": true}'
    SessionRequest.read({SESSION_ID_HEADER: "rehearsal", MAX_SESSION_HEADER: "60"}, raw)
    daily = {ROOM_URL_HEADER: "https://rehearsal.invalid/r", ROOM_TOKEN_HEADER: "rehearsal"}
    SessionRequest.read({**daily, SESSION_ID_HEADER: "rehearsal"}, raw)


class RuntimeEntry:
    """What uvicorn serves: ``app``, with ``POST /bot`` taken the short way when ``short``."""

    def __init__(
        self,
        app: ASGIApp,
        endpoint: BotEndpoint,
        runner: SessionRunner,
        token: InstanceToken,
        *,
        short: bool,
    ) -> None:
        self.app = app
        self.short = short
        self._endpoint = endpoint
        self._runner = runner
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            self.short
            and scope["type"] == "http"
            and scope["path"] == "/bot"
            and scope["method"] == "POST"
        ):
            await self.app(scope, receive, send)
            return
        refused = refusal(scope, self._runner, self._token)
        if refused is not None:
            await refuse(scope, send, *refused)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._endpoint(scope, receive, sending)
        except Exception as exc:
            # as the app's handler of unexpected errors: the platform's shape, no details
            logger.opt(exception=exc).error("Unhandled error on POST /bot")
            if started:
                raise
            error = {"code": CatteryError.code, "error": CatteryError.default_message}
            await _send_json(send, 500, error)


def serves_bot_first(routes: list[Any], endpoint: BotEndpoint) -> bool:
    """Whether ``endpoint`` is the first of ``routes`` that ``POST /bot`` would reach."""
    for route in routes:
        match, _ = route.matches(dict(_BOT_SCOPE))
        if match != Match.NONE:
            return getattr(route, "app", None) is endpoint
    return False


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body, or None when the caller disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    """The session's headers by their contract names (the first of each, as Starlette's)."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        wanted = _WANTED.get(name)
        if wanted is not None and wanted not in found:
            found[wanted] = value.decode("latin-1")
    return found


async def _send_json(
    send: Send, status: int, content: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(content, separators=(",", ":")).encode()
    fields = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    fields += headers or []
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})
