"""The local backend's walls with real processes: whatever an instance starts (in its
group, in a new session, double-forked) ends with it, whether a cgroup v2 group contains
the instance or, where there is none, the runtime is a subreaper."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cattery.backends.base import InstanceSpec
from cattery.backends.local import LocalBackend
from cattery.backends.walls.policy import Walls
from tests.support.processes import TEST_BOTS, with_marker
from tests.support.waiting import until

HOSTILE = TEST_BOTS / "hostile"
TOKEN_HEADER = "x-cattery-instance-token"
TEST_ENV = {"CATTERY_ICE_FALLBACK_URLS": "", "PIPECAT_LOG_LEVEL": "DEBUG"}


@pytest.fixture(params=["cgroup2", "subreaper"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LocalBackend]:
    """A backend whose instances are contained by a cgroup, or by a subreaper runtime; run as
    cattery's own user (tenant users are the security tests')."""
    containment = request.param
    walls = await asyncio.to_thread(
        Walls.probe, tmp_path / "state", users=False, cgroups=containment == "cgroup2"
    )
    if walls.report.processes != containment:
        pytest.skip(f"no {containment} containment on this machine")
    backend = LocalBackend(tmp_path / "state", lambda *_: None, lambda *_: None, walls=walls)
    await backend.start()
    yield backend
    await backend.aclose()


def hostile_spec() -> InstanceSpec:
    return InstanceSpec(
        agent_key="org/hostile", deployment_id="d1", image=str(HOSTILE), env=TEST_ENV
    )


async def test_what_a_session_starts_ends_with_it(backend: LocalBackend, tmp_path: Path) -> None:
    handle = await backend.spawn(hostile_spec())
    await handle.ready(timeout=60)
    marker = f"stray-{uuid.uuid4().hex}"
    report = tmp_path / "report.json"
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        resp = await client.post(
            "/bot",
            json={"strays": marker, "report_to": str(report)},
            headers={TOKEN_HEADER: handle.token},
        )
    assert resp.status_code == 200 and resp.headers["x-cattery-end-state"] == "completed"
    assert json.loads(report.read_text())["strays"]["ok"]
    await handle.wait()
    await handle.aclose()
    await until(lambda: not with_marker(marker), "the session's processes to be gone", timeout=5)


async def test_a_killed_instance_takes_what_it_started(
    backend: LocalBackend, tmp_path: Path
) -> None:
    handle = await backend.spawn(hostile_spec())
    await handle.ready(timeout=60)
    marker = f"stray-{uuid.uuid4().hex}"
    report = tmp_path / "report.json"
    body = {"strays": marker, "report_to": str(report), "hold": str(tmp_path / "never")}
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        session = asyncio.create_task(
            client.post("/bot", json=body, headers={TOKEN_HEADER: handle.token})
        )
        await until(report.exists, "the bot's report")
        await until(lambda: len(with_marker(marker)) >= 3, "three strays")
        handle.kill()
        await handle.aclose()
        await asyncio.gather(session, return_exceptions=True)
    await until(lambda: not with_marker(marker), "the instance's processes to be gone", timeout=5)


async def test_a_ready_instance_is_in_its_group(backend: LocalBackend) -> None:
    handle = await backend.spawn(hostile_spec())
    await handle.ready(timeout=60)
    try:
        if handle.cgroup is None:
            assert backend.walls is not None and backend.walls.report.processes == "subreaper"
        else:  # a forked child is moved into its group after the fork: ready waits for it
            assert handle.pid in handle.cgroup.pids()
    finally:
        await handle.aclose()
