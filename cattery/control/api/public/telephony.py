"""Media WebSockets' routes; the work is ``control/mediasockets.py``'s.

``WS /ws/generic/{AGENT.ORG}[/{token}]`` (a client started with ``transport: "websocket"``)
and ``WS /ws/{carrier}[/{token}]`` (twilio, telnyx, plivo, exotel).
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from cattery.control.mediasockets import serve_websocket
from cattery.control.state import ControlState
from cattery.control.wstokens import GENERIC


def build_router() -> APIRouter:
    router = APIRouter()

    # The generic routes first: ``/ws/{carrier}/{token}`` would match them too.
    @router.websocket("/ws/generic/{service_host}")
    @router.websocket("/ws/generic/{service_host}/{token}")
    async def generic(websocket: WebSocket, service_host: str, token: str | None = None) -> None:
        await serve_websocket(
            _state(websocket), websocket, GENERIC, service_host=service_host, path_token=token
        )

    @router.websocket("/ws/{carrier}")
    @router.websocket("/ws/{carrier}/{token}")
    async def carrier(websocket: WebSocket, carrier: str, token: str | None = None) -> None:
        await serve_websocket(_state(websocket), websocket, carrier, path_token=token)

    return router


def _state(websocket: WebSocket) -> ControlState:
    return websocket.app.state.control
