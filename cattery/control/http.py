"""The control plane's HTTP protocol: uvicorn's httptools one, with three changes.

- Each response's head and body leave together: the official CLI reads some response
  bodies after closing its connection, which only works when the body arrived with the
  headers. uvicorn writes them in two calls, so the transport is wrapped: writes made in
  the same event-loop turn leave in one ``write``.
- A request's headers must arrive within ``header_timeout`` seconds of the connection
  (or of the request's first byte on a kept-alive one); else the connection is closed. A
  slow client can't hold a connection (and its file descriptor) forever.
- A request's head may be at most ``MAX_HEAD_BYTES``; a larger one gets a 431 and the
  connection is closed (httptools itself sets no bound). A WebSocket upgrade gets its 414
  or 431 here when its request line or headers are beyond what the WebSocket library
  parses, rather than a bare 400 from it (or, with some of uvicorn's implementations,
  no answer at all).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS

#: seconds a request's headers may take to arrive whole
DEFAULT_HEADER_TIMEOUT = 10.0
#: a request line and headers beyond this are refused (431)
MAX_HEAD_BYTES = 64 * 1024


class CoalescingTransport:
    """Holds writes until the end of the current loop turn, then sends them as one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending and not self._transport.is_closing():
            self._transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops, and the request gets a 431."""


class CoalescingHttpProtocol(HttpToolsProtocol):
    """Reads ``header_timeout`` from its uvicorn config when set there (``serve`` does)."""

    _head_timer: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _head_too_large = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        super().connection_made(wrapped)  # type: ignore[arg-type]
        self._await_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:  # the next request on a kept-alive connection
            self._await_head()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._refuse(431, "Request Header Fields Too Large", "headers are larger than 64 KB")
        else:
            super().send_400_response(msg)

    def handle_websocket_upgrade(self) -> None:
        """An upgrade the WebSocket library would choke on gets its HTTP answer here."""
        if len(self.url) + 16 > MAX_LINE_LENGTH:
            self._refuse(414, "URI Too Long", f"URL is longer than {MAX_LINE_LENGTH} bytes")
        elif len(self.headers) > MAX_NUM_HEADERS or any(
            len(name) + len(value) + 4 > MAX_LINE_LENGTH for name, value in self.headers
        ):
            self._refuse(
                431,
                "Request Header Fields Too Large",
                f"headers are too large for a WebSocket ({MAX_NUM_HEADERS} headers of at "
                f"most {MAX_LINE_LENGTH} bytes)",
            )
        else:
            super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise HeadTooLarge()

    def _refuse(self, status: int, phrase: str, what: str) -> None:
        """Answer in Pipecat Cloud's error shape and close: the request is never run."""
        self._stop_waiting()
        body = json.dumps({"code": "GENERIC_BAD_REQUEST", "error": f"The request's {what}"})
        head = (
            f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head.encode("latin-1") + body.encode())
            self.transport.close()

    def _await_head(self) -> None:
        timeout = getattr(self.config, "header_timeout", DEFAULT_HEADER_TIMEOUT)
        self._head_bytes = 0
        self._head_timer = self.loop.call_later(timeout, self._head_late)

    def _stop_waiting(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()
