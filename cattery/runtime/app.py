"""The runtime's routes: the pipecat-base contract on the app bots can extend."""

from __future__ import annotations

import inspect
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.responses import JSONResponse
from loguru import logger
from pipecatcloud.agent import (
    DailySessionArguments,
    PipecatSessionArguments,
    WebSocketSessionArguments,
)
from starlette.websockets import WebSocketState

from cattery.contract import (
    END_STATE_HEADER,
    MAX_SESSION_HEADER,
    PLAIN_WEBSOCKET,
    ROOM_TOKEN_HEADER,
    ROOM_URL_HEADER,
    SESSION_ID_HEADER,
    TRACEPARENT_HEADER,
    TRANSPORT_TYPE_HEADER,
)
from cattery.error_handlers import install_error_handlers
from cattery.errors import InvalidRequest
from cattery.runtime import tracing
from cattery.runtime.bodies import decode_ws_body, json_object
from cattery.runtime.guard import InstanceGuard, InstanceToken
from cattery.runtime.loader import LoadedBot
from cattery.runtime.options import RuntimeOptions
from cattery.runtime.sessions import SessionRunner
from cattery.runtime.system import get_app
from cattery.runtime.webrtc import WebRTCSessions, add_webrtc_routes
from cattery.runtime.whatsapp import add_whatsapp_routes


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


async def check_ready(readyz: Any) -> tuple[int, dict[str, Any]]:
    """Run a bot's ``readyz()``: a bool, a dict with ``ready``, or an exception (not ready)."""
    if readyz is None:
        return 200, {"status": "ok"}
    try:
        result = readyz()
        if inspect.isawaitable(result):
            result = await result
    except Exception as exc:
        logger.warning(f"readyz() raised: {exc!r}")
        return 503, {"ready": False, "error": str(exc)}
    if isinstance(result, bool):
        return (200, {"status": "ok"}) if result else (503, {"status": "not ready"})
    if isinstance(result, dict):
        return (200 if result.get("ready", False) else 503), result
    logger.warning(f"readyz() returned unexpected type: {type(result).__name__}")
    return 503, {"status": "error", "error": "invalid readyz return type"}


def ws_transport_type(header: str | None) -> str | None:
    """``websocket`` for a plain WebSocket client, as Pipecat's runner marks its sessions;
    None for a carrier's stream, so ``create_transport`` detects the carrier."""
    return PLAIN_WEBSOCKET if (header or "").strip().lower() == PLAIN_WEBSOCKET else None


@dataclass(frozen=True)
class Unbuilt:
    """What ``build_app`` changes on the shared app, as it was before: the bot's own routes,
    middleware and lifespan. A forked child whose settings differ from those its parent
    built with puts this back, then builds the app for its own."""

    routes: list[Any]
    middleware: list[Any]
    handlers: dict[Any, Any]
    lifespan: Any

    @classmethod
    def of(cls, app: FastAPI) -> Unbuilt:
        return cls(
            list(app.router.routes),
            list(app.user_middleware),
            dict(app.exception_handlers),
            app.router.lifespan_context,
        )

    def restore(self, app: FastAPI) -> None:
        app.router.routes[:] = self.routes
        app.user_middleware[:] = self.middleware
        app.exception_handlers.clear()
        app.exception_handlers.update(self.handlers)
        app.router.lifespan_context = self.lifespan
        app.middleware_stack = None


@dataclass(frozen=True)
class ServedApp:
    """The runtime's app, the runner of its sessions, and the token its guard checks."""

    app: FastAPI
    runner: SessionRunner
    token: InstanceToken


def build_app(loaded: LoadedBot, options: RuntimeOptions) -> ServedApp:
    """Register the contract's routes on the shared app, after any the bot added at import."""
    app = get_app()
    runner = SessionRunner(loaded.bot, image_version=options.image_version)
    webrtc = WebRTCSessions(runner, options)
    token = InstanceToken(options.instance_token)
    install_error_handlers(app)
    app.add_middleware(InstanceGuard, runner=runner, token=token)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if runner.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        status, content = await check_ready(loaded.readyz)
        return JSONResponse(content, status_code=status)

    # A plain route: no parameters for FastAPI to solve on the path of every start.
    async def bot(request: Request) -> JSONResponse:
        headers = request.headers
        x_daily_room_url = headers.get(ROOM_URL_HEADER)
        x_daily_room_token = headers.get(ROOM_TOKEN_HEADER)
        x_daily_session_id = headers.get(SESSION_ID_HEADER)
        x_daily_transport_type = headers.get(TRANSPORT_TYPE_HEADER)
        x_pcc_max_session_seconds = headers.get(MAX_SESSION_HEADER)
        body = await json_object(request, empty_ok=True)
        max_seconds = parse_max_seconds(x_pcc_max_session_seconds)
        session_id = x_daily_session_id or str(uuid.uuid4())
        if x_daily_room_url and x_daily_room_token:
            args: Any = DailySessionArguments(
                session_id=session_id,
                room_url=x_daily_room_url,
                token=x_daily_room_token,
                body=body,
            )
        else:
            args = PipecatSessionArguments(session_id=session_id, body=body)
        traceparent = request.headers.get(TRACEPARENT_HEADER)
        with tracing.session_span(traceparent, session_id):
            if x_daily_transport_type == "webrtc" and not x_daily_room_url:
                with logger.contextualize(session_id=session_id):
                    state = await webrtc.wait_for_offer(session_id, body, max_seconds)
            else:
                state = await runner.run(args, max_seconds=max_seconds)
        await tracing.flush()
        return JSONResponse({}, headers={END_STATE_HEADER: state.value})

    app.add_route("/bot", bot, methods=["POST"])

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, body: str | None = Query(None)) -> None:
        session_id = websocket.headers.get(SESSION_ID_HEADER) or str(uuid.uuid4())
        max_seconds = parse_max_seconds(websocket.headers.get(MAX_SESSION_HEADER))
        await websocket.accept()
        args = WebSocketSessionArguments(
            session_id=session_id,
            websocket=websocket,
            body=decode_ws_body(body),
            transport_type=ws_transport_type(websocket.headers.get(TRANSPORT_TYPE_HEADER)),
        )
        await runner.run(args, max_seconds=max_seconds)
        if websocket.client_state == WebSocketState.CONNECTED:
            await websocket.close()

    add_webrtc_routes(app, webrtc)
    if options.whatsapp is not None:
        add_whatsapp_routes(app, runner, webrtc, options.whatsapp)
    return ServedApp(app, runner, token)
