"""The parent lineage with real processes: one shared parent per interpreter forms each
agent's parent, which forks its instances.

An idle agent parent retires and the next start forms a new one; killing the shared parent
spares running sessions and live agent parents; a bot that can't be imported leaves the
shared parent untouched; an agent parent runs as its organization's user where cattery is
root. (Everything else a forking parent does is ``test_forking.py``'s.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from cattery.backends.base import InstanceSpec
from cattery.backends.local import LocalBackend
from cattery.backends.local.proc import ChildProcess
from cattery.backends.local.venvs import link_cattery, venv_python
from cattery.backends.walls.policy import Walls
from tests.support.processes import TEST_BOTS, gone
from tests.support.waiting import until

PROBE = TEST_BOTS / "probe"
TOKEN_HEADER = "x-cattery-instance-token"
TEST_ENV = {"CATTERY_ICE_FALLBACK_URLS": "", "PIPECAT_LOG_LEVEL": "DEBUG"}
#: short enough to watch a parent retire, long enough that none retires mid-test
IDLE_SECONDS = 1.0


def spec(agent: str, image: Path = PROBE) -> InstanceSpec:
    return InstanceSpec(agent_key=agent, deployment_id="d1", image=str(image), env=TEST_ENV)


async def session(handle, **body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        return await client.post("/bot", json=body, headers={TOKEN_HEADER: handle.token})


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(
        tmp_path / "state",
        lambda i, ln: None,
        lambda i, c, m: None,
        fork=True,
        parent_idle_seconds=IDLE_SECONDS,
    )
    await backend.start()
    yield backend
    await backend.aclose()


def shared_pid(backend: LocalBackend) -> int:
    shared = backend.fork_servers.shared(sys.executable)
    assert shared is not None and shared.pid is not None
    return shared.pid


def open_files(pid: int) -> set[str]:
    """The files ``pid`` holds open (its pipes and sockets left out)."""
    links = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return {link for link in links if not link.startswith(("pipe:", "socket:"))}


async def test_the_shared_parent_holds_no_file_an_agent_parent_would_inherit(backend) -> None:
    """What it opened as root (a library's cache at import, say) every agent's parent would
    hold, as another organization's user: it holds its log and nothing else."""
    await backend.prepare(spec("org/probe"))
    shared = shared_pid(backend)
    log = next(backend.instances_dir.glob("shared-*.log"))
    assert open_files(shared) == {os.devnull, str(log)}
    assert psutil.Process(shared).environ().get("HOME") == "/nonexistent"


async def test_a_retired_parent_is_formed_again_by_a_start(backend) -> None:
    first = await backend.spawn(spec("org/probe"))
    await first.ready(timeout=60)
    parent = backend.fork_servers.parent("org/probe")
    shared = shared_pid(backend)
    assert psutil.Process(parent.pid).ppid() == shared  # formed by the shared parent
    assert psutil.Process(first.pid).ppid() == parent.pid  # a start stays one fork
    assert (await session(first, action="report")).headers["x-cattery-end-state"] == "completed"
    assert await first.wait() == 0
    await first.aclose()

    await until(lambda: backend.fork_servers.parent("org/probe") is None, "the parent to retire")
    await until(lambda: gone(parent.pid), "the retired parent to exit")

    again = await backend.spawn(spec("org/probe"))
    await again.ready(timeout=60)
    formed = backend.fork_servers.parent("org/probe")
    assert formed is not None and formed.pid != parent.pid
    assert psutil.Process(formed.pid).ppid() == shared  # the same shared parent
    assert psutil.Process(again.pid).ppid() == formed.pid
    assert (await session(again, action="report")).headers["x-cattery-end-state"] == "completed"
    await again.aclose()


async def test_killing_the_shared_parent_spares_sessions_and_agent_parents(backend) -> None:
    busy = await backend.spawn(spec("org/probe"))
    idle = await backend.spawn(spec("org/probe"))  # while it lives, the parent can't retire
    await busy.ready(timeout=60)
    await idle.ready(timeout=60)
    parent = backend.fork_servers.parent("org/probe")
    old_shared = shared_pid(backend)
    running = asyncio.create_task(session(busy, action="sleep", seconds=2))
    await until(lambda: "probe bot action 'sleep'" in busy.log_path.read_text(), "the session")

    os.kill(old_shared, signal.SIGKILL)
    await until(lambda: backend.fork_servers.shared(sys.executable) is None, "it to be seen gone")

    assert (await running).headers["x-cattery-end-state"] == "completed"
    assert backend.fork_servers.parent("org/probe") is parent and not gone(parent.pid)
    second = await backend.spawn(spec("org/probe"))  # still forked by the live parent
    await second.ready(timeout=60)
    assert psutil.Process(second.pid).ppid() == parent.pid

    other = await backend.spawn(spec("org/other"))  # a new agent: a new shared parent
    await other.ready(timeout=60)
    new_shared = shared_pid(backend)
    assert new_shared != old_shared
    assert psutil.Process(backend.fork_servers.parent("org/other").pid).ppid() == new_shared
    for handle in (busy, idle, second, other):
        await handle.aclose()


async def test_a_bot_that_fails_to_import_leaves_the_shared_parent_untouched(backend) -> None:
    await backend.prepare(spec("org/probe"))
    shared = shared_pid(backend)
    broken = await backend.spawn(spec("org/broken", TEST_BOTS / "import-error"))
    assert isinstance(broken._process, ChildProcess)  # a plain process instead
    await broken.aclose()
    assert shared_pid(backend) == shared and not gone(shared)
    logs = (backend.instances_dir).glob("parent-org-broken-*.log")
    assert "raised on import" in next(logs).read_text()

    fresh = await backend.spawn(spec("org/fresh"))  # the shared parent still forms parents
    await fresh.ready(timeout=60)
    assert psutil.Process(backend.fork_servers.parent("org/fresh").pid).ppid() == shared
    await fresh.aclose()


async def test_a_venvs_shared_parent_retires_once_no_agent_uses_it(backend, tmp_path) -> None:
    # a venv with cattery on its path, as an agent's own is: a shared parent of its own
    venv = [sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")]
    await asyncio.to_thread(subprocess.run, venv, check=True)
    link_cattery(tmp_path / "venv")
    other = venv_python(tmp_path / "venv")
    venv_spec = InstanceSpec("org/venv", "d1", str(PROBE), env=TEST_ENV, python=other)
    await backend.prepare(venv_spec)
    own = await backend.spawn(spec("org/own"))  # while it runs, its parent stays
    await own.ready(timeout=60)
    theirs = backend.fork_servers.shared(str(other))
    assert theirs is not None and theirs.pid != shared_pid(backend)
    await until(lambda: backend.fork_servers.shared(str(other)) is None, "the venv's to retire")
    await until(lambda: gone(theirs.pid), "it to exit")
    assert backend.fork_servers.shared(sys.executable) is not None  # cattery's own stays
    handle = await backend.spawn(venv_spec)  # a start brings both back
    await handle.ready(timeout=60)
    assert psutil.Process(handle.pid).ppid() == backend.fork_servers.parent("org/venv").pid
    for h in (own, handle):
        await h.aclose()


@pytest.mark.skipif(os.geteuid() != 0, reason="organizations' users need root")
async def test_an_agent_parent_runs_as_its_organizations_user(tmp_path: Path) -> None:
    state = tmp_path / "state"
    walls = await asyncio.to_thread(Walls.probe, state, users=True)
    if not walls.report.users:
        pytest.skip(f"no organizations' users here: {walls.report.reason}")
    backend = LocalBackend(state, lambda i, ln: None, lambda i, c, m: None, walls=walls)
    await backend.start()
    try:
        handle = await backend.spawn(spec("acme/probe"))
        await handle.ready(timeout=60)
        tenant = walls.tenant("acme")
        parent = backend.fork_servers.parent("acme/probe")
        assert psutil.Process(parent.pid).uids().real == tenant.uid
        assert psutil.Process(handle.pid).uids().real == tenant.uid
        assert psutil.Process(shared_pid(backend)).uids().real == os.geteuid()
        assert (await session(handle, action="report")).status_code == 200
        await handle.aclose()
    finally:
        await backend.aclose()
