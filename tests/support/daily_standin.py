"""A stand-in for Daily's REST API, on 127.0.0.1, for tests: not Daily, and never a real room.

It speaks the few documented endpoints cattery calls (https://docs.daily.co/reference/rest-api):

    POST /rooms           {"name"?, "privacy"?, "properties"?} -> the room object
    GET  /rooms/{name}    -> the room object, or 404
    POST /meeting-tokens  {"properties": {"room_name", ...}}   -> {"token": "..."}

Requests need ``Authorization: Bearer <api_key>`` (else 401, as Daily answers). Errors use
Daily's body ``{"error": ..., "info": ...}``. Every request is recorded so a test can check
what cattery asked for; ``fail_next`` makes the next call to a path answer an error.
"""

from __future__ import annotations

import json
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

STANDIN_DOMAIN = "https://cattery-standin.daily.co"


@dataclass
class Recorded:
    method: str
    path: str
    authorization: str | None
    body: Any


@dataclass
class DailyStandin:
    """The stand-in server; use as a context manager. ``url`` is its ``DAILY_API_URL``."""

    api_key: str = field(default_factory=lambda: f"standin-{secrets.token_hex(8)}")
    requests: list[Recorded] = field(default_factory=list)
    rooms: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: token -> the properties it was made with
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    _failures: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> DailyStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="daily-standin", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def fail_next(self, path: str, status: int, error: str, info: str) -> None:
        """The next request to ``path`` (e.g. ``/rooms``) answers ``status`` with this error."""
        with self._lock:
            self._failures[path] = (status, {"error": error, "info": info})

    def recorded(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    # -- the server side -------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0].removeprefix("/v1")
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        auth = handler.headers.get("authorization")
        with self._lock:
            self.requests.append(Recorded(method, path, auth, body))
            failure = self._failures.pop(path, None)
            status, answer = self._answer(method, path, auth, body, failure)
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _answer(
        self,
        method: str,
        path: str,
        auth: str | None,
        body: Any,
        failure: tuple[int, dict[str, Any]] | None,
    ) -> tuple[int, dict[str, Any]]:
        if auth != f"Bearer {self.api_key}":
            return 401, {"error": "authentication-error", "info": "invalid API key"}
        if failure is not None:
            return failure
        if method == "POST" and path == "/rooms":
            return self._create_room(body)
        if method == "GET" and path.startswith("/rooms/"):
            room = self.rooms.get(path.removeprefix("/rooms/"))
            if room is None:
                return 404, {"error": "not-found", "info": "room not found"}
            return 200, room
        if method == "POST" and path == "/meeting-tokens":
            return self._create_token(body)
        return 404, {"error": "not-found", "info": f"no endpoint {method} {path}"}

    def _create_room(self, body: Any) -> tuple[int, dict[str, Any]]:
        body = body if body is not None else {}
        if not isinstance(body, dict):
            return 400, {"error": "invalid-request-error", "info": "body must be an object"}
        properties = body.get("properties", {})
        if not isinstance(properties, dict):
            return 400, {"error": "invalid-request-error", "info": "properties must be an object"}
        name = body.get("name") or uuid.uuid4().hex[:20]
        room = {
            "id": str(uuid.uuid4()),
            "name": name,
            "api_created": True,
            "privacy": body.get("privacy", "public"),
            "url": f"{STANDIN_DOMAIN}/{name}",
            "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "config": properties,
        }
        self.rooms[name] = room
        return 200, room

    def _create_token(self, body: Any) -> tuple[int, dict[str, Any]]:
        properties = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(properties, dict):
            return 400, {"error": "invalid-request-error", "info": "properties must be an object"}
        room_name = properties.get("room_name")
        if room_name is not None and room_name not in self.rooms:
            return 400, {"error": "invalid-request-error", "info": f"no room {room_name!r}"}
        token = f"standin-token-{secrets.token_hex(12)}"
        self.tokens[token] = properties
        return 200, {"token": token}
