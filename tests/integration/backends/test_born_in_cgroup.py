"""Forked instances born in their cgroups, and saying when they serve.

With cgroup v2 walls, an agent's forking parent has a subtree of its own and each instance
it forks is cloned straight into its group there (``clone3`` with ``CLONE_INTO_CGROUP``):
the instance is in its group, with its limits, from its first step, not moved in after it
started. A forked instance says on a pipe that it serves; one that dies first fails its
start with its last lines. Where the child can't be born in its group the parent forks
the ordinary way and the backend moves the child in, as before.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cattery.backends.base import InstanceFailed, InstanceSpec
from cattery.backends.forking import wire
from cattery.backends.local import LocalBackend
from cattery.backends.local.process import limits_of
from cattery.backends.walls.cgroups import PARENT_GROUP_PREFIX, CgroupTree, v2_mount
from cattery.backends.walls.policy import Walls
from tests.integration.backends.test_forking import ForkingParentProcess
from tests.support.processes import TEST_BOTS, bind_loopback
from tests.support.waiting import until

HOSTILE = TEST_BOTS / "hostile"
DIES_AT_START = TEST_BOTS / "dies-at-start"
TOKEN_HEADER = "x-cattery-instance-token"
TEST_ENV = {"CATTERY_ICE_FALLBACK_URLS": "", "PIPECAT_LOG_LEVEL": "DEBUG"}


def spec(image: Path, name: str) -> InstanceSpec:
    return InstanceSpec(agent_key=f"org/{name}", deployment_id="d1", image=str(image), env=TEST_ENV)


def unified(path: Path) -> str:
    """``path``'s name in ``/proc/PID/cgroup``."""
    mount = v2_mount()
    assert mount is not None
    return "/" + str(path.relative_to(mount))


@pytest.fixture
async def walled(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    """A forking backend whose instances have cgroup v2 groups (as cattery's own user)."""
    walls = await asyncio.to_thread(Walls.probe, tmp_path / "state", users=False)
    if walls.report.processes != "cgroup2":
        pytest.skip("no cgroup v2 group per instance on this machine")
    backend = LocalBackend(tmp_path / "state", lambda *_: None, lambda *_: None, walls=walls)
    await backend.start()
    yield backend
    await backend.aclose()


async def test_a_forked_instance_is_born_in_its_group_with_its_limits(
    walled: LocalBackend, tmp_path: Path
) -> None:
    handle = await walled.spawn(spec(HOSTILE, "hostile"))
    assert handle.forked and handle.cgroup is not None
    group = handle.cgroup.path
    subtree = group.parent
    assert subtree.name.startswith(PARENT_GROUP_PREFIX) and group.name == handle.id
    parent = walled.fork_servers.parent("org/hostile")
    assert parent is not None and parent.pid in [
        int(p) for p in (subtree / "parent/cgroup.procs").read_text().split()
    ]
    tree = walled.walls.tree
    if tree is not None and "memory" in tree.controllers:
        assert (group / "memory.max").read_text().strip() == str(
            limits_of(handle.spec).memory_bytes
        )
    assert (group / "cgroup.procs").stat().st_uid == os.geteuid()  # sealed once born

    await handle.ready(timeout=60)  # its word on the readiness pipe
    path = tmp_path / "report.json"
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        resp = await client.post(
            "/bot", json={"report_to": str(path)}, headers={TOKEN_HEADER: handle.token}
        )
    assert resp.status_code == 200, resp.text
    got = json.loads(path.read_text())
    assert got["born_in"] == unified(group)  # at its very first step, not moved in later
    assert got["cgroup"]["value"] == unified(group)
    await handle.wait()
    await handle.aclose()
    assert not group.exists() and subtree.exists()  # the parent still runs in its group

    await walled.retire("org/hostile")
    assert not subtree.exists()  # the subtree went with the last of its groups


async def test_the_next_instance_is_the_spare_child_forked_ahead_in_its_own_group(
    walled: LocalBackend, tmp_path: Path
) -> None:
    first = await walled.spawn(spec(HOSTILE, "hostile"))  # a deploy's, say: no spare yet
    await first.ready(timeout=60)
    parent = walled.fork_servers.parent("org/hostile")
    assert parent is not None and not parent.has_spare and not parent.sparing
    second = await walled.spawn(spec(HOSTILE, "hostile"))
    await second.ready(timeout=60)  # the agent is in use: the parent forks its spare now
    await until(lambda: parent.has_spare, "the spare child")
    spare = parent.take_spare()
    assert spare is not None and spare.cgroup is not None
    parent._spare = spare  # looked at, left in place
    assert spare.pid in spare.cgroup.pids()  # waiting in its group

    handle = await walled.spawn(spec(HOSTILE, "hostile"))
    assert handle.pid == spare.pid and handle.cgroup is not None
    assert handle.cgroup.path == spare.cgroup.path
    await handle.ready(timeout=60)
    path = tmp_path / "report.json"
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        resp = await client.post(
            "/bot", json={"report_to": str(path)}, headers={TOKEN_HEADER: handle.token}
        )
    assert resp.status_code == 200, resp.text
    got = json.loads(path.read_text())
    assert got["born_in"] == got["cgroup"]["value"] == unified(spare.cgroup.path)
    assert got["env"].get("CATTERY_INSTANCE_TOKEN") == handle.token  # its own, at hand-over
    await first.aclose()
    await second.aclose()
    await handle.aclose()
    subtree = spare.cgroup.path.parent
    await walled.retire("org/hostile")  # its next spare goes with it
    assert not subtree.exists()


async def test_a_forked_instance_that_dies_before_serving_fails_its_start_with_its_lines(
    walled: LocalBackend,
) -> None:
    handle = await walled.spawn(spec(DIES_AT_START, "dies"))
    assert handle.forked
    with pytest.raises(InstanceFailed, match="before it was ready") as failed:
        await handle.ready(timeout=60)
    assert "dying before it serves, on purpose" in str(failed.value)
    group = handle.cgroup.path if handle.cgroup is not None else None
    await handle.aclose()
    assert group is None or not group.exists()


def forked(parent: ForkingParentProcess, log: Path, cgroup_fd: int) -> tuple[int, bool, int]:
    """Ask ``parent`` for a child born in ``cgroup_fd``'s group: its pid, whether it was
    born there, and the read end of its readiness pipe."""
    ready_r, ready_w = os.pipe()
    sock = bind_loopback()
    parent._next_id += 1
    request_id = parent._next_id
    with log.open("ab") as out:
        message = {
            "op": "fork",
            "id": request_id,
            "env": {},
            "one_session": True,
            "ready": True,
            "cgroup": True,
        }
        socket.send_fds(
            parent.sock, [wire.encode(message)], [sock.fileno(), out.fileno(), ready_w, cgroup_fd]
        )
    sock.close()
    os.close(ready_w)
    reply = parent._next(lambda m: m.get("id") == request_id, 30)
    assert "pid" in reply, reply
    return int(reply["pid"]), bool(reply["cgroup"]), ready_r


def says_it_serves(ready_r: int) -> bool:
    try:
        return bool(select.select([ready_r], [], [], 30)[0]) and os.read(ready_r, 1) == b"r"
    finally:
        os.close(ready_r)


def test_a_parent_forks_the_ordinary_way_where_it_cannot_clone_into_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a parent started on its own keeps the native threads its imports started (numpy's
    # BLAS pool), and a parent with more than one never clones: one thread, here
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    try:
        tree = CgroupTree.open()
    except OSError as exc:
        pytest.skip(f"no writable cgroup v2 hierarchy: {exc}")
    group = tree.create(f"test-born-{os.getpid()}")
    parent = ForkingParentProcess(HOSTILE, tmp_path / "parent.log")
    try:
        # not a cgroup: the kernel refuses the clone, the parent forks as it always did
        not_a_group = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
        try:
            pid, inside, ready_r = forked(parent, tmp_path / "a.log", not_a_group)
        finally:
            os.close(not_a_group)
        assert not inside and says_it_serves(ready_r)
        os.kill(pid, 9)
        # the next request, with a group, is born in it
        fd = group.open_dir()
        try:
            pid, inside, ready_r = forked(parent, tmp_path / "b.log", fd)
        finally:
            os.close(fd)
        assert inside and pid in group.pids()
        assert says_it_serves(ready_r)
        os.kill(pid, 9)
    finally:
        parent.stop()
        group.kill_and_remove()
