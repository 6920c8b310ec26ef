"""The runtime's ``POST /bot`` in this process: the short way uvicorn takes to the endpoint
answers as the app's route does (guard, bad input, end state), it is left for the app's
when the bot serves ``/bot`` or adds middleware itself, and a connection opened ahead of
its session (as the control plane's dispatcher does) outlives uvicorn's keep-alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.middleware.base import BaseHTTPMiddleware

from cattery.backends.base import InstanceSpec
from cattery.contract import (
    BOT_STARTED,
    END_STATE_HEADER,
    MAX_SESSION_HEADER,
    ROOM_TOKEN_HEADER,
    ROOM_URL_HEADER,
    SESSION_ID_HEADER,
)
from cattery.control.dispatch import StreamDispatcher
from cattery.runtime.app import ServedApp, Unbuilt, build_app
from cattery.runtime.loader import LoadedBot
from cattery.runtime.options import INSTANCE_TOKEN_HEADER, RuntimeOptions
from cattery.runtime.server import make_config
from cattery.runtime.system import get_app
from tests.support.fake_backend import FakeHandle
from tests.support.waiting import until

TOKEN = "instance-token"
AUTH = {INSTANCE_TOKEN_HEADER: TOKEN}

Bot = Callable[[Any], Awaitable[Any]]


@pytest.fixture
def fresh_app() -> Iterator[None]:
    """The process's one runtime app, put back as it was after the test."""
    app = get_app()
    unbuilt = Unbuilt.of(app)
    yield
    unbuilt.restore(app)


def serve(bot: Bot) -> ServedApp:
    loaded = LoadedBot(Path("/nonexistent/bot.py"), ModuleType("bot"), bot, None)
    return build_app(loaded, RuntimeOptions(host="127.0.0.1", instance_token=TOKEN))


@pytest.fixture
async def calls(fresh_app: None) -> AsyncIterator[list[Any]]:
    yield []


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://i")


def recording(calls: list[Any]) -> Bot:
    async def bot(args: Any) -> None:
        calls.append(args)
        if args.body.get("fail"):
            raise RuntimeError("the bot failed")
        if args.body.get("forever"):
            await asyncio.Event().wait()

    return bot


async def test_the_short_way_runs_the_session_and_answers_its_end_state(
    calls: list[Any],
) -> None:
    served = serve(recording(calls))
    assert served.entry.short
    async with client(served.entry) as http:
        resp = await http.post("/bot", json={"a": 1}, headers={**AUTH, SESSION_ID_HEADER: "s1"})
        failed = await http.post("/bot", json={"fail": True}, headers=AUTH)
    assert (resp.status_code, resp.headers[END_STATE_HEADER], resp.json()) == (200, "completed", {})
    assert failed.headers[END_STATE_HEADER] == "agent_error"
    assert (calls[0].session_id, calls[0].body) == ("s1", {"a": 1})
    assert type(calls[0]).__name__ == "PipecatSessionArguments"


async def test_daily_headers_make_daily_arguments(calls: list[Any]) -> None:
    served = serve(recording(calls))
    daily = {ROOM_URL_HEADER: "https://x.daily.co/r", ROOM_TOKEN_HEADER: "tok"}
    async with client(served.entry) as http:
        resp = await http.post("/bot", headers={**AUTH, **daily})
    assert resp.status_code == 200
    assert type(calls[0]).__name__ == "DailySessionArguments"
    assert (calls[0].room_url, calls[0].token, calls[0].body) == ("https://x.daily.co/r", "tok", {})


async def test_the_max_duration_ends_the_session(calls: list[Any]) -> None:
    served = serve(recording(calls))
    async with client(served.entry) as http:
        resp = await http.post(
            "/bot", json={"forever": True}, headers={**AUTH, MAX_SESSION_HEADER: "0.05"}
        )
    assert resp.headers[END_STATE_HEADER] == "terminated"


@pytest.mark.parametrize("short", [True, False], ids=["short way", "app's route"])
async def test_both_ways_refuse_alike(calls: list[Any], short: bool) -> None:
    served = serve(recording(calls))
    app = served.entry if short else served.app
    async with client(app) as http:
        no_token = await http.post("/bot", json={})
        bad_body = await http.post("/bot", content=b"[1]", headers=AUTH)
        bad_max = await http.post("/bot", json={}, headers={**AUTH, MAX_SESSION_HEADER: "soon"})
        served.runner.draining = True
        draining = await http.post("/bot", json={}, headers=AUTH)
    assert (no_token.status_code, no_token.json()["code"]) == (401, "401")
    assert (bad_body.status_code, bad_body.json()["code"]) == (400, "GENERIC_BAD_REQUEST")
    assert "not list" in bad_body.json()["error"]
    assert (bad_max.status_code, bad_max.json()["code"]) == (400, "GENERIC_BAD_REQUEST")
    assert (draining.status_code, draining.json()["code"]) == (503, "SERVICE_UNAVAILABLE")
    assert calls == []


async def test_the_start_line_comes_before_the_bot(calls: list[Any]) -> None:
    lines: list[str] = []

    async def bot(args: Any) -> None:
        lines.append("bot entered")

    served = serve(bot)
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="INFO")
    try:
        async with client(served.entry) as http:
            await http.post("/bot", json={}, headers=AUTH)
    finally:
        logger.remove(sink)
    started = next(i for i, line in enumerate(lines) if line.startswith(BOT_STARTED))
    assert started < lines.index("bot entered")


async def test_a_bot_serving_its_own_bot_route_keeps_it(fresh_app: None) -> None:
    app = get_app()

    @app.post("/bot")
    async def own() -> JSONResponse:
        return JSONResponse({"own": True})

    served = serve(recording([]))
    assert not served.entry.short
    async with client(served.entry) as http:
        resp = await http.post("/bot", json={}, headers=AUTH)
    assert resp.json() == {"own": True}


async def test_a_bot_with_middleware_of_its_own_sees_bot_requests(calls: list[Any]) -> None:
    seen: list[str] = []

    async def note(request: Any, call_next: Any) -> Any:
        seen.append(request.url.path)
        return await call_next(request)

    get_app().add_middleware(BaseHTTPMiddleware, dispatch=note)
    served = serve(recording(calls))
    assert not served.entry.short
    async with client(served.entry) as http:
        resp = await http.post("/bot", json={}, headers=AUTH)
    assert resp.headers[END_STATE_HEADER] == "completed"
    assert seen == ["/bot"]


class _At(FakeHandle):
    def __init__(self, address: str) -> None:
        super().__init__(InstanceSpec(agent_key="o/a", deployment_id="d", image="/b"))
        self._address = address

    @property
    def address(self) -> str:
        return self._address


async def test_a_connection_opened_ahead_outlives_the_keep_alive(calls: list[Any]) -> None:
    """uvicorn arms its keep-alive timeout only after a response: the control plane's
    connection, opened while the instance waits, is still there for its session."""
    served = serve(recording(calls))
    config = make_config(served.entry, host="127.0.0.1", port=0)
    config.timeout_keep_alive = 0.05
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    dispatcher = StreamDispatcher()
    try:
        await until(lambda: server.started, "uvicorn started")
        port = server.servers[0].sockets[0].getsockname()[1]
        handle = _At(f"http://127.0.0.1:{port}")
        dispatcher.instance_idle(handle)
        await until(lambda: len(server.server_state.connections) == 1, "the connection opened")
        await asyncio.sleep(config.timeout_keep_alive * 6)  # idle, longer than the keep-alive
        assert len(server.server_state.connections) == 1
        answer = await dispatcher.post_bot(handle, {**AUTH, SESSION_ID_HEADER: "s1"}, {"a": 1})
    finally:
        await dispatcher.aclose()
        server.should_exit = True
        await serving
    assert (answer.status, answer.end_state) == (200, "completed")
    assert calls[0].body == {"a": 1}
