"""``GET /metrics``: Prometheus' text format, counters that move by exactly what a test did.

In process (``create_app`` on httpx's ASGI transport), with the probe bot on the local
backend: a session that runs, starts refused at capacity, a session stopped.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cattery.control.metrics import ControlMetrics
from tests.support.control import ORG
from tests.support.inprocess import app_client
from tests.support.processes import TEST_BOTS
from tests.support.waiting import async_wait_for

PROBE = TEST_BOTS / "probe"
AGENT = f"{ORG}/probe"
GRAFANA = Path(__file__).parents[3] / "deploy" / "grafana" / "cattery.json"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of the exposition, by name and labels."""
    found: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    resp = await client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(resp.text)


async def public_key(client: httpx.AsyncClient) -> str:
    resp = await client.post(
        f"/v1/organizations/{ORG}/apiKeys", json={"name": "app", "type": "public"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["key"]


async def deploy(client: httpx.AsyncClient) -> None:
    body = {
        "serviceName": "probe",
        "image": f"{PROBE}:latest",
        "autoScaling": {"minAgents": 1, "maxAgents": 1},
    }
    resp = await client.post(f"/v1/organizations/{ORG}/services", json=body)
    assert resp.status_code == 200, resp.text

    async def warm() -> bool:
        resp = await client.get(f"/v1/organizations/{ORG}/services/probe")
        return resp.json()["body"]["pool"]["idle"] == 1

    await async_wait_for(warm, timeout=60, what="a warm probe instance")


async def test_counters_move_by_exactly_the_sessions_and_refusals(tmp_path: Path) -> None:
    async with app_client(tmp_path / "state") as client:
        await deploy(client)
        key = await public_key(client)
        before = await scrape(client)
        assert value(before, "cattery_instances_max", agent=AGENT) == 1

        start = {"createDailyRoom": False, "body": {"action": "forever"}}
        headers = {"Authorization": f"Bearer {key}"}
        resp = await client.post("/v1/public/probe/start", json=start, headers=headers)
        assert resp.status_code == 200, resp.text
        session_id = resp.json()["sessionId"]
        for _ in range(2):
            full = await client.post("/v1/public/probe/start", json=start, headers=headers)
            assert full.status_code == 429, full.text

        async def bot_started() -> dict | None:
            found = await scrape(client)
            count = value(found, "cattery_session_start_seconds_count", agent=AGENT, kind="warm")
            return found if count == 1 else None

        during = await async_wait_for(bot_started, timeout=30, what="the bot to start")
        assert value(during, "cattery_sessions_active", agent=AGENT) == 1
        assert value(during, "cattery_instances", agent=AGENT, state="busy") == 1
        assert value(during, "cattery_sessions_started_total", agent=AGENT) == 1
        assert value(during, "cattery_capacity_refusals_total", agent=AGENT) == 2

        path = f"/v1/organizations/{ORG}/services/probe/sessions/{session_id}"
        assert (await client.delete(path)).status_code == 200

        async def ended() -> dict | None:
            found = await scrape(client)
            return found if value(found, "cattery_sessions_active", agent=AGENT) == 0 else None

        after = await async_wait_for(ended, timeout=30, what="the session to end")
        ended_total = value(
            after, "cattery_sessions_ended_total", agent=AGENT, end_state="terminated"
        )
        assert ended_total == 1
        assert value(after, "cattery_sessions_started_total", agent=AGENT) == 1
        assert value(after, "cattery_capacity_refusals_total", agent=AGENT) == 2
        crashes = value(after, "cattery_instance_crashes_total", agent=AGENT, phase="session")
        assert crashes == 0


async def test_who_may_scrape(tmp_path: Path) -> None:
    async with app_client(tmp_path / "state") as client:
        key = await public_key(client)
        resp = await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 403 and set(resp.json()) == {"code", "error"}
        resp = await client.get("/metrics", headers={"Authorization": ""})
        assert resp.status_code == 401
        private = await client.post(
            f"/v1/organizations/{ORG}/apiKeys", json={"name": "ops", "type": "private"}
        )
        await scrape(client, private.json()["key"])
    # An allow-listed address needs no key (httpx's ASGI client comes from 127.0.0.1).
    async with app_client(tmp_path / "other", metrics={"scrape_addresses": "127.0.0.0/8"}) as c:
        resp = await c.get("/metrics", headers={"Authorization": ""})
        assert resp.status_code == 200, resp.text


def test_the_grafana_dashboard_uses_only_metrics_that_exist() -> None:
    names = set()
    for family in ControlMetrics().registry.collect():
        names.add(family.name)
    exposed = {
        f"{name}{suffix}"
        for name in names
        for suffix in ("", "_total", "_bucket", "_count", "_sum", "_created")
    }
    # the live series are read at scrape time; their names are fixed
    exposed |= {
        "cattery_instances",
        "cattery_instances_max",
        "cattery_sessions_active",
        "cattery_capacity_refusals_total",
        "cattery_instance_crashes_total",
    }
    dashboard = json.loads(GRAFANA.read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            used |= {word for word in _words(target["expr"]) if word.startswith("cattery_")}
    assert used, "the dashboard queries no cattery metric"
    assert used <= exposed, used - exposed


def _words(expr: str) -> list[str]:
    return re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
