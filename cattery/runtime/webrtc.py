"""SmallWebRTC for one instance: ``POST|PATCH /api/offer`` and the ``/bot`` wait-for-offer path.

Pipecat Cloud starts a WebRTC session with ``POST /bot`` (transport type ``webrtc``, no
room) and then forwards the client's offer. The ``/bot`` request holds the session's body
and stays open until the bot that the offer starts has ended.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Header, Request
from loguru import logger
from pipecat.transports.smallwebrtc.connection import IceServer
from pipecat.transports.smallwebrtc.request_handler import (
    ConnectionMode,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecatcloud.agent import SmallWebRTCSessionArguments

from cattery.errors import InvalidRequest
from cattery.runtime.bodies import json_object
from cattery.runtime.options import WEBRTC_OFFER_TIMEOUT, RuntimeOptions
from cattery.runtime.sessions import EndState, SessionRunner

ICE_FETCH_TIMEOUT = 10.0


@dataclass
class _PendingSession:
    session_id: str | None
    body: Any
    max_seconds: float | None
    started: asyncio.Future[asyncio.Task[EndState]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class WebRTCSessions:
    """Owns this instance's SmallWebRTC handler (single connection, as the image does)."""

    def __init__(self, runner: SessionRunner, options: RuntimeOptions) -> None:
        self._runner = runner
        self._options = options
        self._handler = SmallWebRTCRequestHandler(
            connection_mode=ConnectionMode.SINGLE,
            esp32_mode=options.esp32_host is not None,
            host=options.esp32_host,
        )
        self._pending: _PendingSession | None = None

    async def ice_servers(self) -> list[IceServer]:
        """ICE servers from ``ICE_CONFIG_URL``; the configured fallback if that fails."""
        fallback = [IceServer(urls=url) for url in self._options.ice_fallback_urls]
        url = self._options.ice_config_url
        if not url:
            return fallback
        try:
            async with httpx.AsyncClient(timeout=ICE_FETCH_TIMEOUT) as client:
                resp = await client.get(url)
                resp.raise_for_status()
                servers = resp.json().get("iceConfig", {}).get("iceServers", [])
            return [
                IceServer(
                    urls=s.get("urls", []),
                    username=s.get("username", ""),
                    credential=s.get("credential", ""),
                )
                for s in servers
            ]
        except Exception as exc:
            logger.error(f"Failed to fetch ICE configuration from {url}: {exc}; using the fallback")
            return fallback

    async def wait_for_offer(
        self, session_id: str | None, body: Any, max_seconds: float | None
    ) -> EndState:
        """Hold a ``/bot`` webrtc request until its offer's bot has ended."""
        pending = _PendingSession(session_id=session_id, body=body, max_seconds=max_seconds)
        self._pending = pending
        logger.info("Waiting for the WebRTC offer of this session")
        try:
            task = await asyncio.wait_for(asyncio.shield(pending.started), WEBRTC_OFFER_TIMEOUT)
        except TimeoutError:
            logger.error(f"No WebRTC offer arrived within {WEBRTC_OFFER_TIMEOUT:g} s")
            return EndState.AGENT_START_TIMEOUT
        finally:
            if self._pending is pending:
                self._pending = None
        return await asyncio.shield(task)

    async def offer(self, data: dict[str, Any], session_id: str | None) -> dict[str, str] | None:
        try:
            request = SmallWebRTCRequest.from_dict(dict(data))
        except TypeError as exc:
            raise InvalidRequest(f"Invalid WebRTC offer: {exc}") from exc
        self._handler.update_ice_servers(await self.ice_servers())
        pending = self._pending

        async def on_connection(connection: Any) -> None:
            body = request.request_data
            if body is None and pending is not None:
                body = pending.body
            args = SmallWebRTCSessionArguments(
                session_id=session_id or (pending.session_id if pending else None),
                webrtc_connection=connection,
                body=body,
            )
            task = self._runner.start(args, max_seconds=pending.max_seconds if pending else None)
            if pending is not None and not pending.started.done():
                pending.started.set_result(task)

        return await self._handler.handle_web_request(request, on_connection)

    async def patch(self, request: SmallWebRTCPatchRequest) -> None:
        await self._handler.handle_patch_request(request)

    async def aclose(self) -> None:
        await self._handler.close()


def add_webrtc_routes(app: FastAPI, sessions: WebRTCSessions) -> None:
    @app.post("/api/offer")
    async def offer(request: Request, x_daily_session_id: str | None = Header(None)) -> Any:
        data = await json_object(request)
        return await sessions.offer(data, x_daily_session_id)

    @app.patch("/api/offer")
    async def ice_candidate(request: SmallWebRTCPatchRequest) -> dict[str, str]:
        await sessions.patch(request)
        return {"status": "success"}
