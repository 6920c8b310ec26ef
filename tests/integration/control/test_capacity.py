"""Pools through the API: warm starts, the maxAgents cap (429), and refills after sessions end."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.control.helpers import (
    ON_BOTH_DATABASES,
    get_session,
    refused,
    running_control,
    start,
    start_session,
    stop_session,
    wait_ended,
    wait_pool,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"
FOREVER = {"action": "forever"}


@pytest.fixture
def control(tmp_path: Path, control_env: dict[str, str]) -> Iterator[ControlPlane]:
    """A control plane whose pools retire extra idle instances after 1 s, not 300 s."""
    with running_control(tmp_path, **control_env, CATTERY_POOLS__COOLDOWN_SECONDS="1") as control:
        yield control


def concurrent_starts(control: ControlPlane, key: str, count: int) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=control.url, headers=headers, timeout=60) as c:
            payload = {"createDailyRoom": False, "body": FOREVER}
            return list(
                await asyncio.gather(
                    *(c.post("/v1/public/probe/start", json=payload) for _ in range(count))
                )
            )

    return asyncio.run(run())


@ON_BOTH_DATABASES
def test_warm_start_cap_and_refill(control: ControlPlane, tmp_path: Path) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 1, "maxAgents": 2})
    key = control.public_key()
    wait_pool(control, "probe", idle=1, starting=0, busy=0)

    first = start_session(control, key, "probe", FOREVER)
    assert get_session(control, "probe", first)["coldStart"] is False

    # Two more at once: one gets the second instance, the other finds the pool full.
    second, third = sorted(concurrent_starts(control, key, 2), key=lambda r: r.status_code)
    assert second.status_code == 200, second.text
    body = refused(third, 429, "PCC-AGENT-AT-CAPACITY")
    assert "maxAgents" in body["error"]
    refused(start(control, key, "probe", FOREVER), 429, "PCC-AGENT-AT-CAPACITY")
    with control.client() as c:
        status = c.get(f"/v1/organizations/{ORG}/services/probe").json()["body"]
    assert status["activeSessionCount"] == 2
    assert status["pool"] == {"idle": 0, "starting": 0, "busy": 2, "total": 2, "waiting": 0}

    # Stopping a session frees its slot; a fresh warm instance takes its place.
    stop_session(control, "probe", first)
    assert wait_ended(control, "probe", first)["endState"] == "terminated"
    wait_pool(control, "probe", idle=1, starting=0, busy=1)

    # A bot that returns on its own frees its slot too.
    report = tmp_path / "report.json"
    returned = start_session(control, key, "probe", {"report_to": str(report)})
    assert get_session(control, "probe", returned)["coldStart"] is False
    wait_for(report.exists, what="the report of the returning bot")
    assert json.loads(report.read_text())["session_id"] == returned
    assert wait_ended(control, "probe", returned)["endState"] == "completed"
    wait_pool(control, "probe", idle=1, starting=0, busy=1)

    stop_session(control, "probe", second.json()["sessionId"])
    # Both instances end up idle; the one beyond minAgents is retired after the cooldown.
    wait_pool(control, "probe", idle=1, starting=0, busy=0)
    with control.client() as c:
        url = f"/v1/organizations/{ORG}/services/probe/sessions"
        terminated = c.get(url, params={"endState": "terminated"}).json()["sessions"]
        completed = c.get(url, params={"endState": "completed"}).json()["sessions"]
    assert {s["sessionId"] for s in terminated} == {first, second.json()["sessionId"]}
    assert [s["sessionId"] for s in completed] == [returned]
