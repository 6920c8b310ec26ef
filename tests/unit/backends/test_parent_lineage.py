"""The parent lineage's logic, in process: what a shared parent is told about an agent's
parent (its walls, never its environment), how a parent's channel counts its children and
its idleness, and the idle setting.

The far end of each channel is this test, speaking the documented wire protocol
(``cattery/backends/forking/wire.py``) as a parent would.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import pytest

from cattery.backends.forking import wire
from cattery.backends.forking.channel import Channel, ForkFailed
from cattery.backends.walls.policy import Walls
from cattery.backends.walls.tenants import TenantIds
from cattery.settings import Settings

SECRET = "agent-secret-value"


def test_an_agent_parents_walls_plan_names_its_user_and_folder_but_no_secret(
    tmp_path: Path,
) -> None:
    walls = Walls(tmp_path / "state", tenants=TenantIds(tmp_path, 5_000_000, 10), tree=None)
    tenant = walls.tenant("acme")
    assert tenant is not None
    folder = tmp_path / "bot"
    folder.mkdir()
    env = {"PATH": "/usr/bin", "SECRET": SECRET}
    plan = walls.plan(tenant, [sys.executable], env, folder, [folder], None)
    assert plan["uid"] == tenant.uid and plan["gid"] == tenant.gid
    assert plan["cwd"] == str(folder) and str(folder.resolve()) in plan["reveals"]
    assert str((tmp_path / "state").resolve()) in plan["covers"]
    assert SECRET not in json.dumps(plan) and "env" not in plan
    program = [sys.executable]
    launch = walls.launch(tenant, program, env=env, cwd=folder, reveal=[folder], cgroup=None)
    assert launch.plan is not None and json.loads(launch.plan)["env"] == env  # a plain start


class FakeParentEnd:
    """The parent's end of a channel, driven by the test."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def request(self) -> tuple[dict, list[int]]:
        data, fds, _, _ = socket.recv_fds(self.sock, wire.MAX_PACKET, 2)
        return wire.decode(data), fds

    def send(self, message: dict) -> None:
        self.sock.send(wire.encode(message))


async def test_a_channel_counts_live_children_and_the_time_of_its_last_activity() -> None:
    ours, theirs = wire.socket_pair()
    channel = Channel(ours, "test parent")
    parent = FakeParentEnd(theirs)
    try:
        parent.send({"event": "ready", "pid": 1})
        assert (await channel.ready(5))["pid"] == 1
        before = channel.last_activity
        with socket.socket() as passed:
            asking = asyncio.create_task(channel.request({"op": "fork"}, [passed.fileno()]))
            request, fds = await asyncio.to_thread(parent.request)
            for fd in fds:
                socket.socket(fileno=fd).close()
            parent.send({"id": request["id"], "pid": 4242})
            assert (await asking)["pid"] == 4242
        assert request["op"] == "fork" and channel.live_children == 1
        assert channel.last_activity >= before
        parent.send({"event": "exit", "pid": 4242, "code": 3})
        assert await channel.wait_exit_code(4242, 5) == 3
        assert channel.live_children == 0
    finally:
        theirs.close()
    await asyncio.wait_for(channel.gone.wait(), 5)  # end of file: the parent is gone
    with pytest.raises(ForkFailed):
        await channel.request({"op": "fork"}, [])
    await channel.aclose()


async def test_a_parent_that_exits_before_it_is_ready_fails_the_wait() -> None:
    ours, theirs = wire.socket_pair()
    channel = Channel(ours, "test parent")
    FakeParentEnd(theirs).send({"event": "refused", "reason": "threads"})
    theirs.close()
    with pytest.raises(ForkFailed):
        await channel.ready(5)
    assert channel.refusal == "threads"
    await channel.aclose()


def test_agent_parents_retire_after_ten_idle_minutes_unless_told(monkeypatch) -> None:
    assert Settings().parent_idle_seconds == 600
    monkeypatch.setenv("CATTERY_PARENT_IDLE_SECONDS", "5")
    assert Settings().parent_idle_seconds == 5
