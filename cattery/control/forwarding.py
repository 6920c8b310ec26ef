"""Requests sent on to a session's instance: the Session API's and ``cattery dev``'s.

The boundary: the runtime's own routes (``/bot``, ``/ws``, ``/readyz``, ``/livez``,
``/whatsapp``) are the control plane's to call, never a caller's; headers in the platform's
namespaces (``x-daily-*``, ``x-pcc-*``, ``x-cattery-*``) are set by us alone; cookies don't
cross unless the agent's deployment opts in (``sessionCookies``): the Session API shares
the control plane's origin, so one agent's cookies would otherwise reach every other's.

Bodies are passed on whole when small and of a known length (the common case, and the
cheapest); any other body is streamed as it comes, both ways: a chunked or large request
reaches the bot while the caller still sends it, and a bot's streamed answer (server-sent
events, a ``StreamingResponse``) reaches the caller chunk by chunk.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from collections.abc import Set as AbstractSet
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from loguru import logger
from starlette.types import Receive, Scope, Send

from cattery.contract import (
    INSTANCE_TOKEN_HEADER,
    PLATFORM_HEADER_PREFIXES,
    RUNTIME_ROUTES,
    SESSION_ID_HEADER,
)
from cattery.control.state import ControlState
from cattery.control.supervisor import LiveSession
from cattery.errors import NotFound, SessionNotFound, SessionUnreachable

_PLATFORM_PREFIXES = tuple(prefix.encode("latin-1") for prefix in PLATFORM_HEADER_PREFIXES)
_COOKIE, _SET_COOKIE = b"cookie", b"set-cookie"
#: hop-by-hop headers (RFC 9110 7.6.1) belong to one connection and are never forwarded
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
#: the body's length is set anew (a whole body's own, a streamed one's the caller's), the
#: caller's key stays here, and the instance token and session id are ours to set
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    INSTANCE_TOKEN_HEADER,
    SESSION_ID_HEADER,
}
DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {"content-length"}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
#: connecting may take 10 s, and the instance may go 60 s without sending anything
PROXY_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=60.0)
#: headers a client adds of its own accord; only the caller's go to the instance
_NO_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
#: what a client raises when the instance can't be reached, breaks off or times out
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError)
_DROPPED_REQUEST = frozenset(name.encode("latin-1") for name in DROPPED_REQUEST_HEADERS)
_DROPPED_RESPONSE = frozenset(name.encode("latin-1") for name in DROPPED_RESPONSE_HEADERS)
_CONTENT_LENGTH = b"content-length"
#: a body of at most this many bytes, of a known length, is passed on whole; others stream
STREAM_ABOVE_BYTES = 64 * 1024

RawHeaders = list[tuple[bytes, bytes]]


class SessionProxy:
    """Sends requests on to instances over kept-alive connections. Owned by the app's
    lifespan (``proxy_lifespan``); owns its client session and so its connections.

    aiohttp's client, with a C parser, costs about a third of httpx's per request, which
    is most of what the proxy adds. It keeps no cookies (one session's cookies never reach
    another's instance), follows no redirects, decodes nothing and adds no headers of its
    own but ``Host`` and the body's length.
    """

    def __init__(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=PROXY_TIMEOUT,
            skip_auto_headers=_NO_AUTO_HEADERS,
        )

    async def send(
        self, method: str, url: str, headers: RawHeaders, content: bytes | AsyncIterable[bytes]
    ) -> aiohttp.ClientResponse:
        """The instance's answer, its body still to read: raw, as sent (a compressed body
        stays so). The caller releases it."""
        return await self._http.request(
            method,
            url,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
            data=content or None,
            allow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.close()


@asynccontextmanager
async def proxy_lifespan(app: FastAPI) -> AsyncIterator[dict[str, SessionProxy]]:
    proxy = SessionProxy()  # made here: its session belongs to the server's event loop
    try:
        yield {"session_proxy": proxy}
    finally:
        await proxy.aclose()


def session_path(path: str) -> str:
    """``path`` with ``.``/``..`` and repeated slashes resolved, as the instance would see it;
    a 404 when it names one of the runtime's contract routes."""
    clean = posixpath.normpath("/" + path).lstrip("/")
    if clean == ".":
        clean = ""
    first = clean.split("/", 1)[0]
    if first.lower() in RUNTIME_ROUTES:
        raise NotFound(f"/{first} is not reachable through the Session API")
    return clean + ("/" if path.endswith("/") and clean else "")


async def forward(state: ControlState, live: LiveSession, request: Request, path: str) -> Response:
    """``request`` sent on to ``path`` on the session's instance; the instance's answer as sent."""
    if getattr(live.handle, "fenced", None):  # backends.base.Fencing, where offered
        raise SessionUnreachable(
            f"Session {live.id} can't be reached: its machine stopped answering, and the "
            "session is being ended"
        )
    url = f"{live.handle.address}/{path}"
    query: bytes = request.scope.get("query_string", b"")
    if query:
        url += "?" + query.decode("latin-1")
    proxy: SessionProxy = request.state.session_proxy
    headers = _request_headers(request, live)
    cookies = state.deployer.passes_cookies(live.deployment_id)
    if not cookies:
        headers = [(k, v) for k, v in headers if k != _COOKIE]
    content = await _request_content(request, headers)
    head = request.method == "HEAD"
    sent_at = time.perf_counter()
    try:
        upstream = await proxy.send(request.method, url, headers, content)
        state.metrics.proxied(live.agent_key, time.perf_counter() - sent_at)
        if not head and _streams(upstream):
            kept = _response_headers(upstream, keep_length=True, cookies=cookies)
            return _StreamedResponse(upstream, kept)
        try:
            body = await upstream.read()
        finally:
            upstream.release()
    except UPSTREAM_ERRORS as exc:
        raise SessionNotFound(f"Session {live.id} is not reachable: {exc!r}") from exc
    return _response(upstream, body, head=head, cookies=cookies)


async def _request_content(request: Request, headers: RawHeaders) -> bytes | AsyncIterable[bytes]:
    """The caller's body: whole when small and of a known length; else as it arrives, with
    its length (added to ``headers``) when it has one, chunked when not."""
    length = request.headers.get("content-length", "")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if not chunked and (not length.isdigit() or int(length) <= STREAM_ABOVE_BYTES):
        return await request.body()
    if not chunked:
        headers.append((_CONTENT_LENGTH, length.encode("latin-1")))
    return request.stream()


def _streams(upstream: aiohttp.ClientResponse) -> bool:
    """Whether the instance's answer is streamed on: its length unknown (chunked), or large."""
    if upstream.status in (204, 304):  # never a body
        return False
    length = upstream.headers.get("content-length")
    return length is None or not length.isdigit() or int(length) > STREAM_ABOVE_BYTES


class _StreamedResponse(StreamingResponse):
    """The instance's answer passed on as it comes; the upstream answer is closed however
    the stream ends (done, failed, or the caller gone). Owns ``upstream``."""

    def __init__(self, upstream: aiohttp.ClientResponse, headers: RawHeaders) -> None:
        super().__init__(self._chunks(upstream), status_code=upstream.status)
        self.raw_headers = headers
        self._upstream = upstream

    @staticmethod
    async def _chunks(upstream: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        except UPSTREAM_ERRORS as exc:  # the instance broke off: the caller's answer is cut
            logger.warning(f"A streamed Session API answer broke off: {exc!r}")
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._upstream.close()  # its connection too: the stream may have been cut short


def _request_headers(request: Request, live: LiveSession) -> RawHeaders:
    headers = [  # ASGI: lowercase names
        (k, v)
        for k, v in _forwarded(request.scope["headers"], _DROPPED_REQUEST)
        if not k.startswith(_PLATFORM_PREFIXES)
    ]
    headers.append((INSTANCE_TOKEN_HEADER.encode("latin-1"), live.handle.token.encode("latin-1")))
    headers.append((SESSION_ID_HEADER.encode("latin-1"), live.id.encode("latin-1")))
    return headers


def _response_headers(
    upstream: aiohttp.ClientResponse, *, keep_length: bool, cookies: bool
) -> RawHeaders:
    """The instance's headers to pass on; repeated ones (Set-Cookie) stay separate."""
    dropped = _DROPPED_RESPONSE - {_CONTENT_LENGTH} if keep_length else _DROPPED_RESPONSE
    if not cookies:
        dropped = dropped | {_SET_COOKIE}
    lowered = [(k.lower(), v) for k, v in upstream.raw_headers]
    return _forwarded(lowered, dropped)


def _response(
    upstream: aiohttp.ClientResponse, content: bytes, *, head: bool, cookies: bool
) -> Response:
    """The instance's answer as it sent it, read whole."""
    # HEAD has no body: the length is the one a GET would have
    kept = _response_headers(upstream, keep_length=head, cookies=cookies)
    response = Response(content=content, status_code=upstream.status)
    names = {k for k, _ in kept}
    response.raw_headers = [(k, v) for k, v in response.raw_headers if k not in names] + kept
    return response


def _forwarded(headers: Iterable[tuple[bytes, bytes]], dropped: AbstractSet[bytes]) -> RawHeaders:
    """``headers`` (lowercase names) without ``dropped`` ones and those ``Connection`` names."""
    pairs = list(headers)
    named = {
        token.strip().lower()
        for k, v in pairs
        if k == b"connection"
        for token in v.split(b",")
        if token.strip()
    }
    return [(k, v) for k, v in pairs if k not in dropped and k not in named]
