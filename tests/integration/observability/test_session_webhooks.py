"""Session webhooks: signed ``session.started`` and ``session.ended``, retried until they land.

In process (``create_app`` on httpx's ASGI transport) with the probe bot on the local
backend; the receiver is a stand-in HTTP server on loopback that answers as told.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web

from cattery.control.session_webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SECRET_KEY,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)
from tests.support.control import ORG
from tests.support.inprocess import app_client
from tests.support.processes import TEST_BOTS
from tests.support.waiting import async_wait_for
from tests.support.webhooks import hanging_endpoint, webhook_endpoint

PROBE = TEST_BOTS / "probe"
SECRET = "the receiver's shared secret"
SECRET_SET = "hooks"


@dataclass
class Receiver:
    """A stand-in for an app's webhook endpoint: records every request, answers 500 to the
    first ``failures`` tries of each delivery."""

    failures: int = 0
    received: list[tuple[dict[str, str], str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.received.append((dict(request.headers), body))
        delivery = request.headers[DELIVERY_HEADER]
        tries = sum(1 for headers, _ in self.received if headers[DELIVERY_HEADER] == delivery)
        if tries <= self.failures:
            return web.Response(status=500, text="not now")
        return web.Response(text="ok")


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    async with webhook_endpoint(receiver.handle) as url:
        receiver.url = url
        yield receiver


async def deploy(client: httpx.AsyncClient, webhook_url: str) -> None:
    put = await client.put(
        f"/v1/organizations/{ORG}/secrets/{SECRET_SET}",
        json={"secretKey": SECRET_KEY, "secretValue": SECRET},
    )
    assert put.status_code == 200, put.text
    body = {
        "serviceName": "probe",
        "image": f"{PROBE}:latest",
        "secretSet": SECRET_SET,
        "autoScaling": {"minAgents": 1, "maxAgents": 2},
        "sessionWebhookUrl": webhook_url,
    }
    resp = await client.post(f"/v1/organizations/{ORG}/services", json=body)
    assert resp.status_code == 200, resp.text

    async def warm() -> bool:
        resp = await client.get(f"/v1/organizations/{ORG}/services/probe")
        return resp.json()["body"]["pool"]["idle"] >= 1

    await async_wait_for(warm, timeout=60, what="a warm probe instance")


async def run_session(client: httpx.AsyncClient) -> str:
    key = await client.post(
        f"/v1/organizations/{ORG}/apiKeys", json={"name": "app", "type": "public"}
    )
    start = {"createDailyRoom": False, "body": {"action": "sleep", "seconds": 0.2}}
    resp = await client.post(
        "/v1/public/probe/start",
        json=start,
        headers={"Authorization": f"Bearer {key.json()['key']}"},
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["sessionId"]


async def deliveries(client: httpx.AsyncClient, session_id: str) -> list[dict]:
    path = f"/v1/organizations/{ORG}/services/probe/sessions/{session_id}/webhooks"
    resp = await client.get(path)
    assert resp.status_code == 200, resp.text
    return resp.json()["deliveries"]


async def both_delivered(client: httpx.AsyncClient, session_id: str) -> list[dict]:
    """The session's deliveries, once both events have landed."""

    async def landed() -> list[dict] | None:
        found = await deliveries(client, session_id)
        done = [d for d in found if d["status"] == "delivered"]
        return found if len(done) == 2 else None

    return await async_wait_for(landed, timeout=30, what="both deliveries to land")


def assert_signed(headers: dict[str, str], body: str) -> None:
    timestamp = headers[TIMESTAMP_HEADER]
    assert abs(int(timestamp) - time.time()) < 300
    assert headers[SIGNATURE_HEADER] == signature(SECRET, timestamp, body)


async def test_the_receiver_gets_both_events_signed(tmp_path: Path) -> None:
    async with receiving(Receiver()) as receiver, app_client(tmp_path / "state") as client:
        await deploy(client, receiver.url)
        session_id = await run_session(client)
        listed = await both_delivered(client, session_id)
        assert [d["event"] for d in listed] == ["session.started", "session.ended"]
        assert all(d["attempts"] == 1 and d["lastStatusCode"] == 200 for d in listed)

        events = {}
        for headers, body in receiver.received:
            assert_signed(headers, body)
            events[headers[EVENT_HEADER]] = json.loads(body)
        assert set(events) == {"session.started", "session.ended"}
        started, ended = events["session.started"], events["session.ended"]
        assert started["sessionId"] == ended["sessionId"] == session_id
        assert started["botStartSeconds"] is not None
        assert ended["endState"] == "completed"
        assert ended["durationSeconds"] > 0
        assert "userBotLatencySeconds" in ended["latencyMetrics"]


async def test_after_three_500s_the_fourth_try_lands(tmp_path: Path) -> None:
    fast = {"retry_schedule": "0.05,0.1,0.2", "poll_seconds": 0.1}
    async with (
        receiving(Receiver(failures=3)) as receiver,
        app_client(tmp_path / "state", webhooks=fast) as client,
    ):
        await deploy(client, receiver.url)
        session_id = await run_session(client)
        listed = await both_delivered(client, session_id)
        for delivery in listed:  # three 500s, then the fourth try landed
            assert delivery["attempts"] == 4 and delivery["lastStatusCode"] == 200, delivery
        assert len(receiver.received) == 8
        for headers, body in receiver.received:
            assert_signed(headers, body)


async def test_a_hanging_receiver_holds_up_nothing(tmp_path: Path) -> None:
    """A receiver that never answers: starts are answered as ever, and the tries time out."""
    settings = {"timeout_seconds": 0.5, "retry_schedule": "60"}
    async with (
        hanging_endpoint() as url,
        app_client(tmp_path / "state", webhooks=settings) as client,
    ):
        await deploy(client, url)
        session_id = await run_session(client)

        async def timed_out() -> list | None:
            found = await deliveries(client, session_id)
            return found if any(d["lastError"] for d in found) else None

        listed = await async_wait_for(timed_out, timeout=30, what="a try to time out")
        assert all(d["status"] == "pending" for d in listed)


async def test_a_restart_resumes_pending_deliveries(tmp_path: Path) -> None:
    """Events whose tries failed under one control plane are sent by the next one."""
    state = tmp_path / "state"
    quick = {"retry_schedule": "0.2", "poll_seconds": 0.1}
    async with receiving(Receiver(failures=1_000)) as receiver:
        async with app_client(state, webhooks=quick) as client:
            await deploy(client, receiver.url)
            session_id = await run_session(client)

            async def both_failing() -> list | None:
                found = await deliveries(client, session_id)
                return found if len(found) == 2 and all(d["attempts"] for d in found) else None

            pending = await async_wait_for(both_failing, timeout=30, what="failed tries")
            assert {d["status"] for d in pending} == {"pending"}
        receiver.failures = 0  # the receiver is back while no control plane runs
        async with app_client(state, webhooks=quick) as client:

            async def landed() -> list | None:
                found = await deliveries(client, session_id)
                return found if all(d["status"] == "delivered" for d in found) else None

            done = await async_wait_for(landed, timeout=30, what="resumed deliveries")
        assert [d["event"] for d in done] == ["session.started", "session.ended"]
        assert all(d["lastStatusCode"] == 200 and d["attempts"] >= 2 for d in done), done
