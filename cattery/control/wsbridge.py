"""One WebSocket joined to another: a carrier's or client's socket to an instance's ``/ws``.

The control plane may have read a few messages before it knew where the call goes (Twilio
names the agent inside its ``start`` message); those go first, in order, so the bot sees
the stream exactly as the carrier sent it and Pipecat's provider detection works unchanged.
Then text and binary messages flow both ways until either side closes, and the other side
is closed with the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import websockets
from loguru import logger
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus

from cattery.contract import EndState

#: an ASGI ``websocket.receive`` message: ``{"type": ..., "text": ...}`` or ``"bytes"``
Message = Mapping[str, Any]

CONNECT_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 5.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: close codes a peer may send (RFC 6455 7.4); anything else is reported as a normal close
_SENDABLE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013
#: close reasons are at most 123 bytes
MAX_REASON_BYTES = 123

#: what ``bridge`` reports when the bot never got the connection, or lost it
NOT_STARTED = EndState.ENDED_BEFORE_AGENT_START.value
INSTANCE_LOST = EndState.AGENT_ERROR.value


def close_reason(text: str) -> str:
    raw = text.encode()[:MAX_REASON_BYTES]
    return raw.decode(errors="ignore")


def sendable(code: int | None) -> int:
    return code if code in _SENDABLE else 1000


async def bridge(
    downstream: WebSocket,
    upstream_url: str,
    headers: Mapping[str, str],
    replay: Sequence[Message] = (),
) -> str | None:
    """Join the accepted ``downstream`` to a new connection to ``upstream_url``.

    Returns None when the conversation ran and one side closed it, ``NOT_STARTED`` when the
    instance refused or never answered the connection, ``INSTANCE_LOST`` when its
    connection broke without a close. ``downstream`` is closed on return.
    """
    try:
        upstream = await websockets.connect(
            upstream_url,
            additional_headers=dict(headers),
            open_timeout=CONNECT_TIMEOUT_SECONDS,
            close_timeout=CLOSE_TIMEOUT_SECONDS,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            ping_interval=None,  # the instance is on our own network; its exit closes TCP
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        logger.error(f"Instance refused the session's WebSocket: HTTP {status}")
        code = TRY_AGAIN_LATER if status == 503 else INTERNAL_ERROR
        await close_websocket(downstream, code, "The agent's instance refused the connection")
        return NOT_STARTED
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        logger.error(f"Instance of the session is unreachable: {exc!r}")
        await close_websocket(downstream, INTERNAL_ERROR, "The agent's instance is unreachable")
        return NOT_STARTED
    try:
        for message in replay:
            await _send_up(upstream, message)
        return await _pump(downstream, upstream)
    except ConnectionClosed:  # the instance hung up while we replayed
        return await _upstream_closed(downstream, upstream)
    finally:
        await upstream.close()
        await close_websocket(downstream, 1000, "")


async def _pump(downstream: WebSocket, upstream: ClientConnection) -> str | None:
    down = asyncio.create_task(_downstream_to_upstream(downstream, upstream), name="ws_down_task")
    up = asyncio.create_task(_upstream_to_downstream(downstream, upstream), name="ws_up_task")
    try:
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (down, up):
            task.cancel()
        await asyncio.gather(down, up, return_exceptions=True)
    finished = done.pop()
    if finished.cancelled():
        return None
    exc = finished.exception()
    if exc is not None:
        logger.opt(exception=exc).error("A bridged WebSocket failed")
        return INSTANCE_LOST if finished is up else None
    return finished.result()


async def _downstream_to_upstream(downstream: WebSocket, upstream: ClientConnection) -> None:
    """Until the carrier or client hangs up; then the instance's socket closes the same way."""
    while True:
        message = await downstream.receive()
        if message["type"] == "websocket.disconnect":
            code = sendable(message.get("code"))
            await upstream.close(code, close_reason(message.get("reason") or ""))
            return
        try:
            await _send_up(upstream, message)
        except ConnectionClosed:
            return  # the other pump sees the close and passes it on


async def _upstream_to_downstream(downstream: WebSocket, upstream: ClientConnection) -> str | None:
    """Until the instance closes; then the carrier's or client's socket closes the same way."""
    try:
        async for data in upstream:
            if isinstance(data, str):
                await downstream.send_text(data)
            else:
                await downstream.send_bytes(data)
    except ConnectionClosed:
        pass
    except (OSError, RuntimeError, WebSocketDisconnect):
        return None  # the carrier or client went away: the other pump passes that on
    return await _upstream_closed(downstream, upstream)


async def _upstream_closed(downstream: WebSocket, upstream: ClientConnection) -> str | None:
    """Pass the instance's close on; ``INSTANCE_LOST`` when it broke off without one."""
    received = upstream.protocol.close_rcvd
    if received is None:
        await close_websocket(downstream, INTERNAL_ERROR, "The agent's instance went away")
        return INSTANCE_LOST
    await close_websocket(downstream, sendable(received.code), close_reason(received.reason))
    return None


async def _send_up(upstream: ClientConnection, message: Message) -> None:
    if message.get("text") is not None:
        await upstream.send(message["text"])
    elif message.get("bytes") is not None:
        await upstream.send(message["bytes"])


async def close_websocket(websocket: WebSocket, code: int, reason: str) -> None:
    """Close ``websocket`` unless it is closed already (by its peer or by us)."""
    if (
        websocket.client_state == WebSocketState.DISCONNECTED
        or websocket.application_state == WebSocketState.DISCONNECTED
    ):
        return
    try:
        await websocket.close(code=code, reason=reason)
    except (RuntimeError, OSError) as exc:  # the peer went away meanwhile
        logger.debug(f"WebSocket already closed: {exc!r}")
