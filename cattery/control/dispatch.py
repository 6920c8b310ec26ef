"""``POST /bot`` to an instance: the request that runs a dispatched session, held open
until the session ends.

The control plane sends it with aiohttp's client: with its C parser it costs a fraction of
httpx's CPU per request, and a start waits for this request to reach its instance. Tests
dispatch through httpx's mock transport instead (``HttpxDispatcher``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx

from cattery.contract import END_STATE_HEADER

#: how long reaching an instance may take; the request itself lasts the session
CONNECT_TIMEOUT_SECONDS = 10.0
_JSON = {"Content-Type": "application/json"}


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


class BotDispatcher(Protocol):
    async def post_bot(self, address: str, headers: dict[str, str], body: Any) -> BotAnswer: ...

    async def aclose(self) -> None: ...


class AiohttpDispatcher:
    """Owns one client session, made on first use (inside the running loop) and closed by
    ``aclose``. Each instance serves one session, so no connection is kept."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    async def post_bot(self, address: str, headers: dict[str, str], body: Any) -> BotAnswer:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS),
            )
        data = json.dumps(body).encode()
        try:
            async with self._http.post(
                f"{address}/bot", data=data, headers={**headers, **_JSON}
            ) as resp:
                text = await resp.text() if resp.status >= 400 else ""
                return BotAnswer(resp.status, resp.headers.get(END_STATE_HEADER), text)
        except aiohttp.ClientError as exc:  # its timeouts too, which are TimeoutErrors
            raise DispatchFailed(repr(exc)) from exc

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()


class HttpxDispatcher:
    """Dispatches through an httpx client (owned: closed by ``aclose``)."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http

    async def post_bot(self, address: str, headers: dict[str, str], body: Any) -> BotAnswer:
        try:
            resp = await self._http.post(f"{address}/bot", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DispatchFailed(repr(exc)) from exc
        text = resp.text if resp.status_code >= 400 else ""
        return BotAnswer(resp.status_code, resp.headers.get(END_STATE_HEADER), text)

    async def aclose(self) -> None:
        await self._http.aclose()
