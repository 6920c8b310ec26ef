"""Slow and many clients: a connection whose headers don't arrive within the header timeout
is closed, an idle kept-alive one too, oversized heads and WebSocket upgrades get an HTTP
answer; meanwhile a normal start still answers. Bounded: 200 connections, seconds each."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.control.helpers import running_control, start_session, wait_ended
from tests.support.control import ControlPlane
from tests.support.processes import TEST_BOTS

HEADER_TIMEOUT = 2.0
KEEP_ALIVE_TIMEOUT = 1.0
SLOW_CLIENTS = 200
#: how long past the timeout a connection may linger before we call it held
MARGIN = 5.0
UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    env = {
        "CATTERY_HTTP__HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "CATTERY_HTTP__KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT),
    }
    with running_control(tmp_path, **env) as control:
        yield control


async def _slow_client(port: int, deadline: float) -> float | None:
    """A client that trickles a header line every half second and never ends its headers:
    the seconds until the server closed it, or None if it was still open at ``deadline``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        n = 0
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(1024), 0.5)
            except TimeoutError:
                n += 1
                writer.write(b"X-Slow-%d: yes\r\n" % n)
                continue
            if not data:
                return time.monotonic() - opened
        return None
    except ConnectionError:
        return time.monotonic() - opened
    finally:
        writer.close()


async def _exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + MARGIN)
    finally:
        writer.close()


async def test_slow_clients_are_let_go_and_starts_still_answer(control: ControlPlane) -> None:
    control.deploy("probe", TEST_BOTS / "probe", autoScaling={"minAgents": 1})
    key = control.public_key()
    port = control.process.port
    deadline = time.monotonic() + HEADER_TIMEOUT + MARGIN + 5
    slow = [asyncio.create_task(_slow_client(port, deadline)) for _ in range(SLOW_CLIENTS)]
    await asyncio.sleep(0.5)  # they are all connected and trickling
    session_id = await asyncio.to_thread(start_session, control, key, "probe", {"action": "report"})
    closed_after = await asyncio.gather(*slow)
    held = [t for t in closed_after if t is None]
    assert not held, f"{len(held)} of {SLOW_CLIENTS} slow clients were held open"
    assert max(t for t in closed_after if t is not None) < HEADER_TIMEOUT + MARGIN
    assert (await asyncio.to_thread(wait_ended, control, "probe", session_id))["endState"]


async def test_idle_keep_alive_is_closed(control: ControlPlane) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", control.process.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await asyncio.wait_for(reader.readuntil(b'{"status":"ok"}'), 10)
        assert first.startswith(b"HTTP/1.1 200")
        # the server closes the idle connection: read() returns the end of the stream
        assert await asyncio.wait_for(reader.read(), KEEP_ALIVE_TIMEOUT + MARGIN) == b""
    finally:
        writer.close()


async def test_oversized_heads_and_upgrades_get_an_answer(control: ControlPlane) -> None:
    port = control.process.port
    big_header = b"X-Big: " + b"x" * 10_000 + b"\r\n"
    upgrade = b"GET /ws/generic/a.b HTTP/1.1\r\nHost: x\r\n" + UPGRADE + big_header + b"\r\n"
    assert (await _exchange(port, upgrade)).startswith(b"HTTP/1.1 431 ")
    long_url = b"GET /ws/generic/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\n"
    assert (await _exchange(port, long_url)).startswith(b"HTTP/1.1 414 ")
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100))
    huge = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"
    answer = await _exchange(port, huge)
    assert answer.startswith(b"HTTP/1.1 431 ") and b'"code"' in answer
