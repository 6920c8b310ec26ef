"""SmallWebRTC for one instance: ``POST|PATCH /api/offer`` and the ``/bot`` wait-for-offer path.

Pipecat Cloud starts a WebRTC session with ``POST /bot`` (transport type ``webrtc``, no
room) and then forwards the client's offer. The ``/bot`` request holds the session's body
and stays open until the bot that the offer starts has ended. A session's peer connection
ends with it, and everything it logs carries the session's id.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiortc.sdp import SessionDescription
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
#: how long an offer naming a session waits for that session's ``/bot`` to arrive
OFFER_BEFORE_BOT_SECONDS = 10.0


@dataclass
class _PendingSession:
    session_id: str | None
    body: Any
    max_seconds: float | None
    started: asyncio.Future[asyncio.Task[EndState]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


def parse_offer(data: dict[str, Any]) -> SmallWebRTCRequest:
    """An offer body as Pipecat's request, or a 400 saying what is wrong with it.

    Pipecat's handler would answer an offer without media with an empty answer and start a
    session whose peer can never connect, so the SDP is checked before it gets there.
    """
    try:
        request = SmallWebRTCRequest.from_dict(dict(data))
    except TypeError as exc:
        raise InvalidRequest(f"Invalid WebRTC offer: {exc}") from exc
    problem = _offer_problem(request)
    if problem:
        raise InvalidRequest(f"Invalid WebRTC offer: {problem}")
    return request


def _offer_problem(request: SmallWebRTCRequest) -> str | None:
    if not isinstance(request.sdp, str):
        return "sdp must be a string"
    if request.type != "offer":
        return f"type must be 'offer', not {request.type!r}"
    if request.pc_id is not None and not isinstance(request.pc_id, str):
        return "pc_id must be a string"
    if request.restart_pc is not None and not isinstance(request.restart_pc, bool):
        return "restart_pc must be a boolean"
    try:
        description = SessionDescription.parse(request.sdp)
    except Exception as exc:
        return f"unparsable SDP: {exc!r}"
    if not description.media:
        return "the SDP offers no media"
    return None


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
        self._pending_arrived = asyncio.Condition()
        self._disconnect_tasks: set[asyncio.Task[None]] = set()
        self._session_of: dict[str, str] = {}  # pc_id -> session id, while the session runs

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
        async with self._pending_arrived:
            self._pending_arrived.notify_all()
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
        request = parse_offer(data)
        self._handler.update_ice_servers(await self.ice_servers())
        pending = await self._pending_for(session_id)
        session_id = session_id or (pending.session_id if pending else None)
        if session_id is None and not request.pc_id:
            session_id = str(uuid.uuid4())

        async def on_connection(connection: Any) -> None:
            body = request.request_data
            if not body and pending is not None:  # an empty requestData too, as the runner
                body = pending.body
            args = SmallWebRTCSessionArguments(
                session_id=session_id or str(uuid.uuid4()),
                webrtc_connection=connection,
                body=body,
            )
            task = self._runner.start(args, max_seconds=pending.max_seconds if pending else None)
            self._session_of[connection.pc_id] = args.session_id
            self.close_when_done(task, connection, args.session_id)
            if pending is not None and not pending.started.done():
                pending.started.set_result(task)

        # The peer connection's tasks start here, before the bot's: they log with the
        # session's id only if they inherit it now. (A renegotiation keeps its own.)
        tagged = logger.contextualize(session_id=session_id) if session_id else nullcontext()
        try:
            with tagged:
                return await self._handler.handle_web_request(request, on_connection)
        except ValueError as exc:  # aiortc refusing the description (no ICE credentials, ...)
            raise InvalidRequest(f"Invalid WebRTC offer: {exc}") from exc

    async def _pending_for(self, session_id: str | None) -> _PendingSession | None:
        """The ``/bot`` waiting for an offer.

        The control plane sends a session's ``/bot`` and then its offer on separate
        connections, so an offer naming a new session may overtake its ``/bot``: it waits a
        moment for it rather than start a session the ``/bot`` would never see.
        """
        if session_id is None or self._pending is not None:
            return self._pending
        if session_id in self._session_of.values():  # a renegotiation of a running session
            return None
        try:
            async with asyncio.timeout(OFFER_BEFORE_BOT_SECONDS), self._pending_arrived:
                await self._pending_arrived.wait_for(lambda: self._pending is not None)
        except TimeoutError:
            pass
        return self._pending

    def close_when_done(self, task: asyncio.Task[Any], connection: Any, session_id: str) -> None:
        """End ``connection`` with its session, so the next peer is not refused.

        A bot may return without closing its transport; the peer connection would then
        stay open, holding this instance's single WebRTC connection.
        """

        def on_done(_: asyncio.Task[Any]) -> None:
            self._session_of.pop(connection.pc_id, None)
            disconnect_task = asyncio.ensure_future(self._disconnect(connection, session_id))
            self._disconnect_tasks.add(disconnect_task)
            disconnect_task.add_done_callback(self._disconnect_tasks.discard)

        task.add_done_callback(on_done)

    @staticmethod
    async def _disconnect(connection: Any, session_id: str) -> None:
        with logger.contextualize(session_id=session_id):
            try:
                await connection.disconnect()
            except Exception as exc:
                logger.warning(f"Error closing the session's peer connection: {exc!r}")

    async def patch(self, request: SmallWebRTCPatchRequest) -> None:
        session_id = self._session_of.get(request.pc_id)
        with logger.contextualize(session_id=session_id) if session_id else nullcontext():
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
