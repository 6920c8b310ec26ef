"""The runtime's routes: the pipecat-base contract on the app bots can extend."""

from __future__ import annotations

import inspect
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, WebSocket
from fastapi.responses import JSONResponse
from loguru import logger
from pipecatcloud.agent import WebSocketSessionArguments
from starlette.websockets import WebSocketState

from cattery.contract import (
    MAX_SESSION_HEADER,
    PLAIN_WEBSOCKET,
    SESSION_ID_HEADER,
    TRANSPORT_TYPE_HEADER,
)
from cattery.error_handlers import install_error_handlers
from cattery.runtime.bodies import decode_ws_body
from cattery.runtime.botroute import BotEndpoint, RuntimeEntry, parse_max_seconds, serves_bot_first
from cattery.runtime.guard import InstanceGuard, InstanceToken
from cattery.runtime.loader import LoadedBot
from cattery.runtime.options import RuntimeOptions
from cattery.runtime.sessions import SessionRunner
from cattery.runtime.system import get_app
from cattery.runtime.webrtc import WebRTCSessions, add_webrtc_routes
from cattery.runtime.whatsapp import add_whatsapp_routes


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
    """The runtime's app, the runner of its sessions, the token its guard checks, and
    what uvicorn serves (the app, with ``POST /bot`` the short way)."""

    app: FastAPI
    runner: SessionRunner
    token: InstanceToken
    entry: RuntimeEntry


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

    endpoint = BotEndpoint(runner, webrtc)
    app.add_route("/bot", endpoint, methods=["POST"])

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
    # the short way only when the guard is the one middleware and our route serves /bot
    short = len(app.user_middleware) == 1 and serves_bot_first(app.router.routes, endpoint)
    entry = RuntimeEntry(app, endpoint, runner, token, short=short)
    return ServedApp(app, runner, token, entry)
