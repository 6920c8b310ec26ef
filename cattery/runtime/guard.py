"""ASGI guard in front of every route: the instance token, and refusals while draining."""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from cattery.runtime.options import INSTANCE_TOKEN_HEADER
from cattery.runtime.sessions import SessionRunner

OPEN_PATHS = frozenset({"/livez", "/readyz"})
SESSION_PATHS = frozenset({"/bot", "/ws", "/api/offer", "/whatsapp"})
WS_TRY_AGAIN_LATER = 1013
_TOKEN_HEADER = INSTANCE_TOKEN_HEADER.lower().encode()


class InstanceToken:
    """The token every request but the open paths must carry (None: no check). Settable: a
    forked instance's app is built in its parent, before the instance has a token."""

    def __init__(self, value: str | None = None) -> None:
        self.value: bytes | None = None
        self.set(value)

    def set(self, value: str | None) -> None:
        self.value = value.encode() if value else None


class InstanceGuard:
    """Refuses requests without the instance token, and new sessions while draining."""

    def __init__(self, app: ASGIApp, runner: SessionRunner, token: InstanceToken) -> None:
        self.app = app
        self.runner = runner
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refused = refusal(scope, self.runner, self.token)
        if refused is not None:
            await refuse(scope, send, *refused)
            return
        await self.app(scope, receive, send)


def refusal(
    scope: Scope, runner: SessionRunner, token: InstanceToken
) -> tuple[int, str, str] | None:
    """Why an HTTP or WebSocket request is refused (status, code, message), or None."""
    path = scope["path"]
    expected = token.value
    if expected is not None and path not in OPEN_PATHS:
        given = b""
        for name, value in scope["headers"]:
            if name == _TOKEN_HEADER:
                given = value
                break
        if not hmac.compare_digest(given, expected):
            return 401, "401", "Missing or wrong instance token"
    if runner.draining and path in SESSION_PATHS and _starts_session(scope):
        return 503, "SERVICE_UNAVAILABLE", "Instance is shutting down"
    return None


def _starts_session(scope: Scope) -> bool:
    return scope["type"] == "websocket" or scope.get("method") == "POST"


async def refuse(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": WS_TRY_AGAIN_LATER, "reason": message})
