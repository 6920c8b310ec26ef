"""The one start path (``control/sessions.py``), in this process: ``create_app`` with the
fake backend as its local one, and the instances' runtimes answered by httpx's mock
transport. A start takes an instance and dispatches to it; a full agent answers 429 (the
caller's to retry); an instance that frees lets the next start in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cattery.contract import END_STATE_HEADER, INSTANCE_TOKEN_HEADER, SESSION_ID_HEADER
from cattery.control.state import ControlState
from cattery.store import repositories as repo
from tests.support.control import ORG
from tests.support.fake_backend import FakeBackend
from tests.support.inprocess import bot, fake_control_plane, settled, status_when


@dataclass
class Runtimes:
    """The instances' runtimes: each ``POST /bot`` is kept until the test ends its bot."""

    bots: dict[str, asyncio.Event] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        done = self.bots.setdefault(request.headers[SESSION_ID_HEADER], asyncio.Event())
        await done.wait()
        return httpx.Response(200, headers={END_STATE_HEADER: "completed"})

    def end(self, session_id: str) -> None:
        self.bots.setdefault(session_id, asyncio.Event()).set()

    def end_all(self) -> None:
        for done in self.bots.values():
            done.set()


@dataclass
class Platform:
    client: httpx.AsyncClient
    state: ControlState
    runtimes: Runtimes
    key: str = ""

    async def start(self, body: object = None) -> httpx.Response:
        return await self.client.post(
            "/v1/public/agent/start",
            json={"createDailyRoom": False, "body": body or {}},
            headers={"Authorization": f"Bearer {self.key}"},
        )

    async def end_states(self) -> dict[str, str | None]:
        async with self.state.sessionmaker() as db:
            org = await repo.get_organization_by_name(db, ORG)
            assert org is not None
            rows = await repo.list_organization_sessions(db, org.id)
        return {row.id: row.end_state for row in rows}


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    runtimes = Runtimes()
    instances = httpx.AsyncClient(transport=httpx.MockTransport(runtimes.answer))
    async with fake_control_plane(tmp_path / "state", tmp_path, FakeBackend(), instances) as (
        client,
        state,
    ):
        body = {
            "serviceName": "agent",
            "image": bot(tmp_path / "bot"),
            "autoScaling": {"minAgents": 0, "maxAgents": 1},
        }
        assert (await client.post("/v1/agents", json=body)).status_code == 200
        await status_when(client, "agent", settled, "the deploy")
        resp = await client.post(
            f"/v1/organizations/{ORG}/apiKeys", json={"name": "app", "type": "public"}
        )
        platform = Platform(client, state, runtimes, resp.json()["key"])
        yield platform
        runtimes.end_all()
        await client.aclose()


async def wait_until(check, what: str) -> None:
    from tests.support.waiting import async_wait_for

    async def condition() -> bool:
        return bool(await check())

    await async_wait_for(condition, timeout=10, what=what)


async def test_a_start_dispatches_to_an_instance_and_records_the_session(platform) -> None:
    resp = await platform.start({"hello": "bot"})

    assert resp.status_code == 200, resp.text
    session_id = resp.json()["sessionId"]
    await wait_until(lambda: _async(platform.runtimes.requests), "the dispatch")
    sent = platform.runtimes.requests[0]
    assert sent.url.path.endswith("/bot")  # the instance's address, then /bot
    assert sent.headers[SESSION_ID_HEADER] == session_id
    assert sent.headers[INSTANCE_TOKEN_HEADER]  # the instance's own token, set by us
    assert json.loads(sent.content) == {"hello": "bot"}
    assert (await platform.end_states()) == {session_id: None}  # live

    platform.runtimes.end(session_id)

    async def ended() -> bool:
        return (await platform.end_states()).get(session_id) == "completed"

    await wait_until(ended, "the session's end state")


async def test_a_full_agent_refuses_records_and_serves_again_once_free(platform) -> None:
    first = await platform.start()
    assert first.status_code == 200, first.text
    running = first.json()["sessionId"]

    refused = await platform.start()

    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "PCC-AGENT-AT-CAPACITY"
    assert (await platform.end_states()) == {running: None}  # an app's refused start: no session

    platform.runtimes.end(running)  # the bot returns: its one-session instance goes

    async def admitted() -> bool:
        return (await platform.start()).status_code == 200

    await wait_until(admitted, "a start once the instance is free")


async def _async(value: object) -> object:
    return value


async def test_refused_starts_get_the_platforms_shape_and_start_nothing(platform) -> None:
    client = platform.client
    auth = {"Authorization": f"Bearer {platform.key}"}

    no_key = await client.post("/v1/public/agent/start", json={}, headers={"Authorization": ""})
    wrong_key = await client.post(
        "/v1/public/agent/start", json={}, headers={"Authorization": "Bearer pk_nope"}
    )
    unknown = await client.post("/v1/public/nobody/start", json={}, headers=auth)
    not_json = await client.post("/v1/public/agent/start", content=b"{", headers=auth)
    too_large = await client.post("/v1/public/agent/start", content=b" " * 1_000_001, headers=auth)
    bad_wait = await client.post(
        "/v1/public/agent/start", json={}, headers={**auth, "X-Cattery-Start-Wait": "soon"}
    )
    nested = await client.post("/v1/public/agent/x/start", json={}, headers=auth)

    assert [r.status_code for r in (no_key, wrong_key, unknown, not_json, too_large)] == [
        401,
        401,
        404,
        400,
        413,
    ]
    assert (bad_wait.status_code, nested.status_code) == (400, 404)
    for resp in (no_key, wrong_key, unknown, not_json, too_large, bad_wait, nested):
        assert set(resp.json()) == {"code", "error"}, resp.text
    assert platform.runtimes.requests == []
    assert await platform.end_states() == {}
