"""The Session API streams: a bot's streamed answer reaches the caller chunk by chunk, and a
caller's streamed body reaches the bot while it is still being sent.

The test bot holds each next chunk until the caller asks for it, having received the last;
and the caller sends its body's second part only once the bot shows it has the first. A
proxy that buffered either way would wait forever: each step has a deadline instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from tests.integration.control.helpers import start_session, stop_session, wait_ended
from tests.support.control import ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import async_wait_for

STEP_DEADLINE = 20.0
#: the test bot's answers are gzipped for clients that accept it; these do not
IDENTITY = {"accept-encoding": "identity"}


async def read_line(chunks: AsyncIterator[bytes], pending: bytearray) -> bytes:
    """The next line of a streamed answer, read from ``chunks`` as far as needed."""
    async with asyncio.timeout(STEP_DEADLINE):
        while b"\n" not in pending:
            pending += await anext(chunks)
    line, _, rest = bytes(pending).partition(b"\n")
    pending[:] = rest
    return line


async def test_a_streamed_answer_and_a_streamed_body_pass_chunk_by_chunk(
    control: ControlPlane,
) -> None:
    control.deploy("echo", TEST_BOTS / "session-echo", autoScaling={"minAgents": 1})
    key = control.public_key()
    session_id = start_session(control, key, "echo", {})
    base = f"/v1/public/echo/sessions/{session_id}"
    auth = {"Authorization": f"Bearer {key}", **IDENTITY}
    async with (
        httpx.AsyncClient(base_url=control.url, headers=auth, timeout=60) as c,
        httpx.AsyncClient(base_url=control.url, headers=auth, timeout=60) as side,
    ):

        async def routes_answer() -> bool:
            return (await side.get(f"{base}/upload")).status_code == 200

        await async_wait_for(routes_answer, timeout=30, what="the session's routes")

        # The answer: each chunk arrives while the bot still holds back the next.
        async with c.stream("GET", f"{base}/stream", params={"chunks": 3}) as resp:
            assert resp.status_code == 200, await resp.aread()
            assert "content-length" not in resp.headers
            assert resp.headers["content-type"].startswith("text/plain")
            chunks, pending = resp.aiter_raw(), bytearray()
            for i in range(3):
                assert await read_line(chunks, pending) == f"chunk {i}".encode()
                if i < 2:
                    assert (await side.post(f"{base}/stream/next")).status_code == 200
            assert b"".join([rest async for rest in chunks]) == b"" and not pending

        # The body: its first part reaches the bot before the second is sent.
        async def body() -> AsyncIterator[bytes]:
            yield b"first part;"

            async def bot_has_it() -> bool:
                got = (await side.get(f"{base}/upload")).json()["received"]
                return got == "first part;"

            await async_wait_for(bot_has_it, timeout=STEP_DEADLINE, what="the first part")
            yield b"second part"

        resp = await c.post(f"{base}/upload", content=body())
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"received": "first part;second part"}

        # Small answers and bodies still pass whole, with their length.
        resp = await c.post(f"{base}/echo/x", content=b"small")
        assert resp.json()["body"] == "small" and resp.headers["content-length"]

    stop_session(control, "echo", session_id)
    assert wait_ended(control, "echo", session_id)["endState"] == "terminated"
