"""``POST /bot`` to an instance: the request that runs a dispatched session, held open
until the session ends.

A warm start should cost the instance little more than the bytes of its request, so the
connection to a warm instance is opened while it waits in its pool (``instance_idle``)
and kept until its session's request uses it, or until the pool lets the instance go
(``instance_gone``). A kept connection the instance closed meanwhile is noticed before
use and replaced by a new one; a request that may have reached the instance is never
sent again (its session may have begun). On a kept connection the request's head
leaves as soon as the session has its instance, and the body once the session is durable:
the instance reads and checks the head meanwhile, and can't run the bot before the body is
in. HTTP/1.1 is spoken with h11 over asyncio streams. Tests dispatch through httpx's
mock transport instead (``HttpxDispatcher``).
"""

from __future__ import annotations

import asyncio
import json
import select
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import h11
import httpx
from loguru import logger

from cattery.backends.base import InstanceHandle
from cattery.contract import END_STATE_HEADER
from cattery.pools.options import InstanceEvents, NoEvents
from cattery.tasks import OwnedTasks

#: how long reaching an instance may take; the request itself lasts the session
CONNECT_TIMEOUT_SECONDS = 10.0
#: how much of a refusal's body is kept for the log
MAX_REFUSAL_BYTES = 64 * 1024
_READ_SIZE = 64 * 1024
_END_STATE = END_STATE_HEADER.lower().encode()


@dataclass(frozen=True)
class BotAnswer:
    """The instance's answer once the session is over (or refused)."""

    status: int
    #: the end state the runtime reported in its answer's header, when it did
    end_state: str | None
    #: the body of a refusal (status 400 and above), for the log
    text: str = ""


class DispatchFailed(Exception):
    """The instance could not be reached, or the connection broke before its answer."""


class BotRequest(Protocol):
    """One session's ``POST /bot``, begun before its session is durable: the instance may
    read what it can meanwhile, but its bot can't run before ``send_rest``."""

    def send_rest(self) -> None:
        """The session is durable: send what was held back (the body)."""

    def abort(self) -> None:
        """The session will not be: close what was sent, so the instance runs nothing."""

    async def answer(self) -> BotAnswer:
        """Once ``send_rest`` was called: the instance's answer, at the session's end."""
        ...


class BotDispatcher(InstanceEvents, Protocol):
    """Sends sessions' ``POST /bot``; told by the pools of instances waiting and gone."""

    def begin(self, handle: InstanceHandle, headers: dict[str, str], body: Any) -> BotRequest:
        """Start ``POST /bot`` to ``handle``: as much of it leaves now as may before the
        session is durable."""
        ...

    async def aclose(self) -> None: ...


class StreamDispatcher:
    """Dispatches over connections of its own: one kept per idle instance, opened by an
    owned task, or a new one when none is kept (an instance started for the session)."""

    def __init__(self) -> None:
        self._kept: dict[str, _Kept] = {}
        self._tasks = OwnedTasks("dispatch")

    def instance_idle(self, handle: InstanceHandle) -> None:
        if handle.id in self._kept or self._tasks.closed:
            return
        kept = self._kept[handle.id] = _Kept()
        kept.opening = self._tasks.spawn(kept.open(handle.address), "preconnect_task")

    def instance_gone(self, handle: InstanceHandle) -> None:
        kept = self._kept.pop(handle.id, None)
        if kept is not None:
            kept.close()

    def kept(self, handle: InstanceHandle) -> bool:
        """Whether an open connection to ``handle`` is kept for its session."""
        kept = self._kept.get(handle.id)
        return kept is not None and kept.stream is not None

    def begin(self, handle: InstanceHandle, headers: dict[str, str], body: Any) -> _StreamRequest:
        kept = self._kept.pop(handle.id, None)
        stream = kept.take() if kept is not None else None
        return _StreamRequest(handle.address, stream, headers, json.dumps(body).encode())

    async def post_bot(
        self, handle: InstanceHandle, headers: dict[str, str], body: Any
    ) -> BotAnswer:
        """The whole request at once, and its answer."""
        request = self.begin(handle, headers, body)
        request.send_rest()
        return await request.answer()

    async def aclose(self) -> None:
        await self._tasks.aclose()
        for kept in self._kept.values():
            kept.close()
        self._kept.clear()


class _StreamRequest:
    """On a kept connection the request's head leaves at once (the instance, woken, reads
    it and checks its token while the control plane records the session) and its body on
    ``send_rest``: the bot runs only once the body is in. Without one, the whole request
    leaves once a connection is made, in ``answer``."""

    def __init__(
        self, address: str, stream: _Stream | None, headers: dict[str, str], data: bytes
    ) -> None:
        self._address = address
        self._headers = headers
        self._data = data
        self._stream = stream
        self._failed: DispatchFailed | None = None
        self._rest_sent = False
        if stream is not None:
            try:
                stream.send_head(headers, len(data))
            except DispatchFailed as exc:
                self._fail(exc)

    def _fail(self, exc: DispatchFailed) -> None:
        self._failed = exc
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def send_rest(self) -> None:
        self._rest_sent = True
        if self._stream is not None:
            self._stream.send_body(self._data)

    def abort(self) -> None:
        self._fail(DispatchFailed("the session was not recorded; its request was withdrawn"))

    async def answer(self) -> BotAnswer:
        if self._failed is not None:
            raise self._failed
        if not self._rest_sent:
            raise DispatchFailed("the request's body was never sent")
        stream = self._stream
        connected = stream is None
        if stream is None:
            stream = self._stream = await _Stream.connect(self._address)
        try:
            if connected:
                stream.send_head(self._headers, len(self._data))
                stream.send_body(self._data)
            return await stream.read_answer()
        finally:
            stream.close()


class _Kept:
    """A connection opened ahead of its session; ``take`` hands it over once."""

    def __init__(self) -> None:
        self.stream: _Stream | None = None
        self.opening: asyncio.Task[None] | None = None
        self.closed = False

    async def open(self, address: str) -> None:
        try:
            stream = await _Stream.connect(address)
        except DispatchFailed as exc:  # the start opens its own, and finds out
            logger.debug(f"Could not open a connection to {address} ahead of its session: {exc}")
            return
        if self.closed:
            stream.close()
        else:
            self.stream = stream

    def take(self) -> _Stream | None:
        """The open connection if the instance has not closed it, else None (a new one is
        made: one still being opened is dropped rather than waited for)."""
        stream, self.stream = self.stream, None
        self.close()
        if stream is not None and not stream.usable():
            stream.close()
            return None
        return stream

    def close(self) -> None:
        self.closed = True
        if self.opening is not None and not self.opening.done():
            self.opening.cancel()
        if self.stream is not None:
            self.stream.close()
            self.stream = None


class _Stream:
    """One HTTP/1.1 exchange over one connection, closed after it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host
        self._http = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, address: str) -> _Stream:
        url = urlsplit(address)
        if url.scheme != "http" or not url.hostname:
            raise DispatchFailed(f"cannot dispatch to {address!r}: not an http:// address")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(url.hostname, url.port or 80),
                CONNECT_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError) as exc:
            raise DispatchFailed(f"cannot connect to {address}: {exc!r}") from exc
        return cls(reader, writer, url.netloc)

    def usable(self) -> bool:
        """Not closed by either side, and nothing waiting to be read: an idle connection
        the peer closed (or reset) is readable before the loop has noticed."""
        if self._writer.is_closing() or self._reader.at_eof():
            return False
        sock = self._writer.get_extra_info("socket")
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return not poller.poll(0)

    def send_head(self, headers: dict[str, str], length: int) -> None:
        """Write the request's head (no await: the bytes leave with this call)."""
        fields = [
            ("Host", self._host),
            ("Content-Type", "application/json"),
            ("Content-Length", str(length)),
            *headers.items(),
        ]
        try:
            out = self._http.send(h11.Request(method="POST", target="/bot", headers=fields))
        except (h11.LocalProtocolError, UnicodeError) as exc:  # nothing was sent
            raise DispatchFailed(f"cannot send this request: {exc!r}") from exc
        self._writer.write(out)  # type: ignore[arg-type]

    def send_body(self, data: bytes) -> None:
        """Write the body the head announced, and end the request."""
        out = self._http.send(h11.Data(data=data))
        out += self._http.send(h11.EndOfMessage())  # type: ignore[operator]
        self._writer.write(out)  # type: ignore[arg-type]

    async def read_answer(self) -> BotAnswer:
        status = 0
        end_state: str | None = None
        body = bytearray()
        try:
            while True:
                event = self._http.next_event()
                if event is h11.NEED_DATA:
                    self._http.receive_data(await self._reader.read(_READ_SIZE))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    for name, value in event.headers:
                        if name == _END_STATE:
                            end_state = value.decode("latin-1")
                elif isinstance(event, h11.Data):
                    if status >= 400 and len(body) < MAX_REFUSAL_BYTES:
                        body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise DispatchFailed("the instance closed the connection before answering")
        except (OSError, h11.RemoteProtocolError) as exc:
            raise DispatchFailed(repr(exc)) from exc
        text = body[:MAX_REFUSAL_BYTES].decode("utf-8", "replace") if status >= 400 else ""
        return BotAnswer(status, end_state, text)

    def close(self) -> None:
        self._writer.close()


class HttpxDispatcher(NoEvents):
    """Dispatches through an httpx client (owned: closed by ``aclose``); keeps nothing."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    def begin(self, handle: InstanceHandle, headers: dict[str, str], body: Any) -> _HttpxRequest:
        return _HttpxRequest(self._http, f"{handle.address}/bot", headers, body)

    async def aclose(self) -> None:
        await self._http.aclose()


@dataclass
class _HttpxRequest:
    """Sent whole in ``answer``: nothing leaves before the session is durable."""

    http: httpx.AsyncClient
    url: str
    headers: dict[str, str]
    body: Any
    sendable: bool = False
    aborted: bool = False

    def send_rest(self) -> None:
        self.sendable = True

    def abort(self) -> None:
        self.aborted = True

    async def answer(self) -> BotAnswer:
        if self.aborted or not self.sendable:
            raise DispatchFailed("the request was withdrawn before it was sent")
        try:
            resp = await self.http.post(self.url, json=self.body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise DispatchFailed(repr(exc)) from exc
        text = resp.text if resp.status_code >= 400 else ""
        return BotAnswer(resp.status_code, resp.headers.get(END_STATE_HEADER), text)
