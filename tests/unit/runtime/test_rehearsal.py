"""A pooled instance's rehearsal: one request to itself once it serves, refused by its
token before anything runs, never a session, never a log line; and none once a session
or a drain came first."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from loguru import logger

from cattery.contract import END_STATE_HEADER, SESSION_ID_HEADER
from cattery.runtime import botroute, guard, rehearsal
from cattery.runtime.options import INSTANCE_TOKEN_HEADER
from cattery.runtime.server import DrainingServer, make_config
from tests.support.waiting import until
from tests.unit.runtime.test_bot_route import AUTH, calls, fresh_app, recording, serve

__all__ = ["calls", "fresh_app"]  # fixtures


@pytest.fixture(autouse=True)
def not_rehearsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as a fresh instance, whatever a test before rehearsed in it."""
    monkeypatch.setattr(rehearsal, "_rehearsed", False)


@pytest.fixture
def lines() -> AsyncIterator[list[str]]:
    seen: list[str] = []
    sink = logger.add(lambda message: seen.append(str(message)), level="DEBUG")
    yield seen
    logger.remove(sink)


async def _serving(calls: list[Any], *, rehearses: bool) -> tuple[DrainingServer, asyncio.Task]:
    served = serve(recording(calls))
    server = DrainingServer(
        make_config(served.entry, host="127.0.0.1", port=0), served.runner, shutdown_timeout=1
    )
    server.rehearses = rehearses
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, "uvicorn started")
    return server, task


async def _stop(server: DrainingServer, task: asyncio.Task) -> None:
    server.should_exit = True
    await task


async def test_a_pooled_instance_rehearses_once_and_then_serves_its_session(
    calls: list[Any], lines: list[str]
) -> None:
    server, task = await _serving(calls, rehearses=True)
    try:
        await until(lambda: server.server_state.total_requests == 1, "the rehearsal")
        await until(lambda: not server.server_state.connections, "its connection closed")
        assert calls == []  # refused by the token: no session ran
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            resp = await http.post("/bot", json={"a": 1}, headers={**AUTH, SESSION_ID_HEADER: "s1"})
    finally:
        await _stop(server, task)
    assert resp.headers[END_STATE_HEADER] == "completed"
    assert [args.body for args in calls] == [{"a": 1}]
    assert not [line for line in lines if "rehearsal" in line or "401" in line], lines


@pytest.mark.parametrize("why", ["not in a pool", "was a spare that rehearsed"])
async def test_an_instance_that_need_not_rehearse_does_not(
    calls: list[Any], monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    if why != "not in a pool":
        monkeypatch.setattr(rehearsal, "_rehearsed", True)
    server, task = await _serving(calls, rehearses=why != "not in a pool")
    try:
        await asyncio.sleep(rehearsal.REHEARSE_AFTER_SECONDS * 5)
        assert server.server_state.total_requests == 0
    finally:
        await _stop(server, task)


@pytest.mark.parametrize("first", ["session", "drain"])
async def test_no_rehearsal_once_a_session_or_a_drain_came_first(
    calls: list[Any], monkeypatch: pytest.MonkeyPatch, first: str
) -> None:
    delay = 1.0  # ample for the session's or the drain's coming first, even on a busy machine
    monkeypatch.setattr(rehearsal, "REHEARSE_AFTER_SECONDS", delay)
    serving_since = time.monotonic()
    server, task = await _serving(calls, rehearses=True)
    port = server.servers[0].sockets[0].getsockname()[1]
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
    posting = None
    try:
        if first == "session":
            body = {"forever": True}
            posting = asyncio.create_task(http.post("/bot", json=body, headers=AUTH))
            await until(lambda: calls, "the session's bot")
        else:
            server._runner.draining = True  # as the first SIGTERM does
        assert time.monotonic() - serving_since < delay
        await asyncio.sleep(serving_since + delay + 0.3 - time.monotonic())
        assert server.server_state.total_requests == 0  # (a session's counts once answered)
    finally:
        if posting is not None:
            posting.cancel()
        await http.aclose()
        server.force_exit = True
        await _stop(server, task)


def test_a_spares_dress_rehearsal_serves_no_session_and_leaves_the_app_as_it_was(
    calls: list[Any], lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[int] = []

    async def refuse(scope: Any, send: Any, status: int, *rest: Any) -> None:
        refused.append(status)
        await guard.refuse(scope, send, status, *rest)

    monkeypatch.setattr(botroute, "refuse", refuse)
    served = serve(recording(calls))
    waiting, handover = socket.socketpair()
    with waiting, handover:
        rehearsal.dress_rehearsal(served, waiting.fileno())
    assert refused == [401]  # its request, refused by the token it had meanwhile
    assert rehearsal._rehearsed  # once serving, the instance it becomes won't again
    assert calls == []
    assert served.token.value == AUTH[INSTANCE_TOKEN_HEADER].encode()
    assert not lines, lines


def test_a_hand_over_cuts_a_dress_rehearsal_short(
    calls: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rehearsal, "REHEARSE_AFTER_SECONDS", 30.0)
    served = serve(recording(calls))
    waiting, handover = socket.socketpair()
    with waiting, handover:
        handover.send(b"{}")  # the instance it is to become
        started = time.monotonic()
        rehearsal.dress_rehearsal(served, waiting.fileno())
        assert time.monotonic() - started < rehearsal.REHEARSE_AFTER_SECONDS
        assert waiting.recv(16) == b"{}"  # left for the spare to read
