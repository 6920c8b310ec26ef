"""Forked instances are complete instances.

Part one runs every runtime acceptance test that starts a runtime (``start_runtime``)
against children of a forking parent instead of ``cattery runtime`` processes: the parent
is driven over its control socket exactly as the local backend drives it, without an
instance token, so the tests run unchanged. Part two uses the local backend itself:
sessions share no module state, killing the parent spares running sessions, an idle child
follows its owner, and a bot that can't be forked falls back to a plain process.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from cattery.backends.base import InstanceFailed, InstanceSpec, InstanceStatus
from cattery.backends.forking import wire
from cattery.backends.local import LocalBackend
from cattery.backends.local.forkserver import ForkedProcess
from cattery.backends.local.proc import ChildProcess
from cattery.pools import Pool, PoolOptions
from tests.integration.runtime import (
    test_bad_input,
    test_contract,
    test_features,
    test_shutdown,
    test_webrtc,
    test_whatsapp,
)
from tests.integration.runtime.test_whatsapp import whatsapp_runtime  # noqa: F401
from tests.support.processes import REPO, TEST_BOTS, OnLoopback, base_env, bind_loopback, gone
from tests.support.waiting import until, wait_for

PROBE = TEST_BOTS / "probe"
TOKEN_HEADER = "x-cattery-instance-token"
TEST_ENV = {"CATTERY_ICE_FALLBACK_URLS": "", "PIPECAT_LOG_LEVEL": "DEBUG"}
LOAD_TIMEOUT = 60.0


# -- part one: the runtime's acceptance tests, against forked children ------------------


class ForkingParentProcess:
    """A forking parent for one bot, driven over its control socket as the backend does."""

    def __init__(self, bot: Path, log_path: Path) -> None:
        self.bot = bot
        self.log_path = log_path
        self.exits: dict[int, int] = {}
        self._replies: dict[int, dict] = {}
        self._next_id = 0
        self.sock, theirs = wire.socket_pair()
        self._lifeline_r, self._lifeline_w = os.pipe()
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cattery.backends.forking.parent",
                    str(bot),
                    "--control-fd",
                    str(theirs.fileno()),
                    "--lifeline-fd",
                    str(self._lifeline_r),
                ],
                pass_fds=[theirs.fileno(), self._lifeline_r],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=base_env(),
                cwd=bot,
                start_new_session=True,
            )
        theirs.close()
        try:
            ready = self._next(lambda m: m.get("event") == "ready", LOAD_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        assert ready["pid"] == self.proc.pid

    def fork(self, log_path: Path, env: dict[str, str]) -> ForkedRuntime:
        """A child serving like ``cattery runtime`` (not ``--one-session``) on a new port."""
        self._next_id += 1
        request_id = self._next_id
        sock = bind_loopback()
        with log_path.open("ab") as log:
            message = {"op": "fork", "id": request_id, "env": env, "one_session": False}
            socket.send_fds(self.sock, [wire.encode(message)], [sock.fileno(), log.fileno()])
        port = sock.getsockname()[1]
        sock.close()
        reply = self._next(lambda m: m.get("id") == request_id, 30)
        assert "pid" in reply, reply
        return ForkedRuntime(self, int(reply["pid"]), port, log_path)

    def pump(self, timeout: float = 0.0) -> None:
        """Read what the parent has sent: exit codes and replies."""
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.0, deadline - time.monotonic())
            if not select.select([self.sock], [], [], left)[0]:
                return
            packet = self.sock.recv(wire.MAX_PACKET)
            if not packet:
                return
            message = wire.decode(packet)
            if message.get("event") == "exit":
                self.exits[message["pid"]] = message["code"]
            elif message.get("event") is None:
                self._replies[message["id"]] = message
            else:
                self._replies.setdefault(-1, message)
            timeout, deadline = 0.0, time.monotonic()

    def _next(self, match: Callable[[dict], bool], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not select.select([self.sock], [], [], deadline - time.monotonic())[0]:
                break
            packet = self.sock.recv(wire.MAX_PACKET)
            assert packet, f"the forking parent exited:\n{self.log_path.read_text()}"
            message = wire.decode(packet)
            if message.get("event") == "exit":
                self.exits[message["pid"]] = message["code"]
            if match(message):
                return message
        raise AssertionError(f"no answer from the forking parent:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self._lifeline_r)
        os.close(self._lifeline_w)


class ForkedRuntime(OnLoopback):
    """A forked child, with the interface the runtime tests use on a ``ServerProcess``."""

    def __init__(self, parent: ForkingParentProcess, pid: int, port: int, log_path: Path):
        self.parent = parent
        self.pid = pid
        self.port = port
        self.log_path = log_path
        self.proc = self  # the tests call ``rt.proc.poll()``

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def poll(self) -> int | None:
        self.parent.pump()
        return self.parent.exits.get(self.pid)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"forked child {self.pid}", timeout)
            self.parent.pump(0.1)
        return self.parent.exits[self.pid]

    def signal(self, sig: int = signal.SIGTERM) -> None:
        os.kill(self.pid, sig)

    def wait_ready(self, timeout: float = 30.0) -> ForkedRuntime:
        def ready() -> bool:
            if self.poll() is not None:
                raise AssertionError(f"forked child exited:\n{self.logs()}")
            return httpx.get(self.url + "/livez", timeout=2).status_code == 200

        wait_for(ready, timeout=timeout, what=f"{self.url}/livez")
        return self

    def stop(self) -> None:
        if self.poll() is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
            self.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.wait(5)
        except ProcessLookupError:
            pass


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Callable[..., ForkedRuntime]]:
    """As the shared ``start_runtime``, but each runtime is a child of a forking parent."""
    parents: dict[Path, ForkingParentProcess] = {}
    started: list[ForkedRuntime] = []

    def start(bot: Path | str, ready: bool = True, **env: str) -> ForkedRuntime:
        bot = Path(bot).resolve()
        if bot not in parents:
            parents[bot] = ForkingParentProcess(bot, tmp_path / f"parent-{len(parents)}.log")
        rt = parents[bot].fork(tmp_path / f"runtime-{len(started)}.log", base_env(**env))
        started.append(rt)
        return rt.wait_ready() if ready else rt

    yield start
    for rt in started:
        rt.stop()
    for parent in parents.values():
        parent.stop()


def _runtime_acceptance_tests() -> dict[str, Callable[..., object]]:
    """Every runtime test that starts its runtime through ``start_runtime``."""
    found = {}
    modules = (test_contract, test_shutdown, test_bad_input, test_features, test_whatsapp)
    for module in (*modules, test_webrtc):
        for name, test in vars(module).items():
            if not name.startswith("test_") or not inspect.isfunction(test):
                continue
            uses = set(inspect.signature(test).parameters)
            if uses & {"start_runtime", "whatsapp_runtime"}:
                found[f"test_forked_{name.removeprefix('test_')}"] = test
    return found


globals().update(_runtime_acceptance_tests())


def test_every_runtime_acceptance_test_runs_forked_too() -> None:
    names = set(_runtime_acceptance_tests())
    assert "test_forked_twilio_echo_returns_audio_and_tags_logs" in names
    assert "test_forked_sigterm_refuses_new_sessions_and_lets_running_ones_finish" in names
    assert len(names) >= 25


@pytest.mark.parametrize(
    ("bot", "problem"), [("import-error", "raised on import"), ("no-bot", "defines no bot()")]
)
def test_a_parent_that_cannot_load_its_bot_exits_2_with_one_line(
    tmp_path: Path, bot: str, problem: str
) -> None:
    log = tmp_path / "parent.log"
    with pytest.raises(AssertionError, match="the forking parent exited"):
        ForkingParentProcess(TEST_BOTS / bot, log)
    errors = [ln for ln in log.read_text().splitlines() if "cattery runtime: error:" in ln]
    assert len(errors) == 1 and problem in errors[0]


# -- part two: the local backend with forking parents ----------------------------------


def probe_spec(image: Path = PROBE, **env: str) -> InstanceSpec:
    return InstanceSpec(
        agent_key="org/probe", deployment_id="d1", image=str(image), env={**TEST_ENV, **env}
    )


async def report(handle, path: Path, **body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        return await client.post(
            "/bot",
            json={"action": "report", "report_to": str(path), **body},
            headers={TOKEN_HEADER: handle.token},
        )


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "state", lambda i, ln: None, lambda i, c, m: None, fork=True)
    await backend.start()
    yield backend
    await backend.aclose()


async def test_two_sessions_share_no_module_state(backend, tmp_path) -> None:
    handles = [await backend.spawn(probe_spec(PROBE_SECRET="s3cret")) for _ in range(2)]
    parent = backend.fork_servers.parent("org/probe")
    assert parent is not None
    for n, handle in enumerate(handles):
        assert isinstance(handle._process, ForkedProcess)
        await handle.ready(timeout=60)
        assert psutil.Process(handle.pid).ppid() == parent.pid  # forked, not started
        assert os.getsid(handle.pid) == handle.pid  # its own session
        assert psutil.Process(handle.pid).cwd() == str(PROBE.resolve())
        resp = await report(handle, tmp_path / f"r{n}.json")
        assert resp.headers["x-cattery-end-state"] == "completed"
        got = json.loads((tmp_path / f"r{n}.json").read_text())
        assert got["module_calls"] == 1  # a fresh bot module in each instance
        assert got["env"] == {"PROBE_SECRET": "s3cret"}
        assert await handle.wait() == 0  # one session, then exit; the parent reports 0
        assert handle.status == InstanceStatus.STOPPED
        await handle.aclose()
    assert handles[0].token != handles[1].token


def fd_links(pid: int) -> set[str]:
    """What ``pid``'s descriptors point at (one that closes meanwhile is left out)."""
    links = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            pass
    return links


async def test_children_hold_none_of_the_parents_descriptors(backend) -> None:
    handle = await backend.spawn(probe_spec())
    await handle.ready(timeout=60)
    parent = backend.fork_servers.parent("org/probe")
    parent_sockets = {link for link in fd_links(parent.pid) if link.startswith("socket:")}
    assert not fd_links(handle.pid) & parent_sockets  # not the control socket
    assert os.readlink(f"/proc/{handle.pid}/fd/1") == str(handle.log_path)
    await handle.aclose()


async def test_killing_the_parent_spares_sessions_and_the_next_start_works(
    backend, tmp_path
) -> None:
    busy = await backend.spawn(probe_spec())
    idle = await backend.spawn(probe_spec())
    await busy.ready(timeout=60)
    await idle.ready(timeout=60)
    old = backend.fork_servers.parent("org/probe")
    async with httpx.AsyncClient(base_url=busy.address, timeout=60) as client:
        session = asyncio.create_task(
            client.post(
                "/bot",
                json={"action": "sleep", "seconds": 2},
                headers={TOKEN_HEADER: busy.token},
            )
        )
        await until(lambda: "probe bot action 'sleep'" in busy.log_path.read_text(), "session")

        os.kill(old.pid, signal.SIGKILL)
        await until(lambda: not old.alive, "the backend to see the parent gone")

        resp = await session
        assert resp.headers["x-cattery-end-state"] == "completed"
    assert await busy.wait() in (0, None)  # nobody reports its code any more
    assert busy.status == InstanceStatus.STOPPED
    async with httpx.AsyncClient(base_url=idle.address, timeout=10) as client:
        assert (await client.get("/livez")).status_code == 200  # idle ones live on too

    fresh = await backend.spawn(probe_spec())
    await fresh.ready(timeout=60)
    new = backend.fork_servers.parent("org/probe")
    assert new is not None and new.pid != old.pid
    assert psutil.Process(fresh.pid).ppid() == new.pid
    resp = await report(fresh, tmp_path / "fresh.json")
    assert json.loads((tmp_path / "fresh.json").read_text())["module_calls"] == 1
    for handle in (idle, fresh):
        await handle.aclose()
    assert gone(idle.pid) and gone(busy.pid)


async def test_a_new_deployment_gets_a_new_parent(backend) -> None:
    first = await backend.spawn(probe_spec())
    old = backend.fork_servers.parent("org/probe")
    second = await backend.spawn(
        InstanceSpec("org/probe", "d2", str(PROBE), env={**TEST_ENV, "PROBE_V": "2"})
    )
    new = backend.fork_servers.parent("org/probe")
    assert new is not None and new.pid != old.pid
    await until(lambda: not old.alive, "the old parent to retire")
    await first.ready(timeout=60)  # its instances are not touched
    await second.ready(timeout=60)
    for handle in (first, second):
        await handle.aclose()


async def test_a_pool_refills_with_forked_instances(backend) -> None:
    pool = Pool("org/probe", probe_spec(), PoolOptions(min_agents=2), backend)
    try:
        await pool.start()
        await until(lambda: pool.stats().idle == 2, "two warm instances", timeout=60)
        lease = await pool.acquire()
        assert lease.cold_start is False
        await pool.release(lease.handle)
        await until(lambda: pool.stats().idle >= 2, "the pool back at its target", timeout=60)
        parent = backend.fork_servers.parent("org/probe")
        for handle in backend.handles:
            if handle.status == InstanceStatus.READY:
                assert psutil.Process(handle.pid).ppid() == parent.pid
    finally:
        await pool.aclose()


async def test_a_pool_with_no_warm_target_loads_its_parent_when_it_starts(backend) -> None:
    pool = Pool("org/probe", probe_spec(), PoolOptions(min_agents=0), backend)
    try:
        await pool.start()  # a deploy: returns once the parent has loaded the bot
        parent = backend.fork_servers.parent("org/probe")
        assert parent is not None and pool.stats().total == 0
        lease = await pool.acquire()  # the first start is a fork already
        assert psutil.Process(lease.handle.pid).ppid() == parent.pid
        await pool.release(lease.handle)
    finally:
        await pool.aclose()
    broken = InstanceSpec("org/broken", "d1", str(TEST_BOTS / "import-error"), env=TEST_ENV)
    await backend.prepare(broken)  # no error: its instances will be plain processes
    assert backend.fork_servers.parent("org/broken") is None
    handle = await backend.spawn(broken)
    assert isinstance(handle._process, ChildProcess)
    await handle.aclose()


async def test_a_bot_that_cannot_load_falls_back_to_a_plain_process(backend) -> None:
    spec = InstanceSpec("org/broken", "d1", str(TEST_BOTS / "import-error"), env=TEST_ENV)
    handle = await backend.spawn(spec)
    assert isinstance(handle._process, ChildProcess)
    with pytest.raises(InstanceFailed, match="last log lines"):
        await handle.ready(timeout=60)
    await handle.aclose()
    again = await backend.spawn(spec)  # marked: no second parent for this deployment
    assert isinstance(again._process, ChildProcess)
    await again.aclose()


THREAD_AT_IMPORT = """
import threading

stop = threading.Event()
threading.Thread(target=stop.wait, name="started-at-import", daemon=True).start()


async def bot(runner_args):
    pass
"""


async def test_a_bot_that_starts_a_thread_at_import_is_not_forked(backend, tmp_path) -> None:
    folder = tmp_path / "threaded"
    folder.mkdir()
    (folder / "bot.py").write_text(THREAD_AT_IMPORT)
    spec = InstanceSpec("org/threaded", "d1", str(folder), env=TEST_ENV)
    handle = await backend.spawn(spec)
    assert isinstance(handle._process, ChildProcess)
    reason = backend.fork_servers.plain_processes_reason(spec)
    assert reason is not None and "started threads (started-at-import)" in reason, reason
    await handle.ready(timeout=60)
    await handle.aclose()
    parent_logs = list((tmp_path / "state" / "instances").glob("parent-org-threaded-*.log"))
    assert "started-at-import" in parent_logs[0].read_text()


OWNER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from cattery.backends.base import InstanceSpec
    from cattery.backends.local import LocalBackend

    async def main():
        state, out, image = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
        backend = LocalBackend(state, lambda i, l: None, lambda i, c, m: None, fork=True)
        env = {"CATTERY_ICE_FALLBACK_URLS": ""}
        handle = await backend.spawn(InstanceSpec("org/probe", "d1", image, env=env))
        await handle.ready(60)
        parent = backend.fork_servers.parent("org/probe").pid
        out.with_suffix(".tmp").write_text(json.dumps({"child": handle.pid, "parent": parent}))
        out.with_suffix(".tmp").rename(out)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def start_owner(tmp_path: Path, out: Path) -> subprocess.Popen[bytes]:
    """A stand-in control plane with one idle forked instance; it writes both pids."""
    with (tmp_path / "owner.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", OWNER, str(tmp_path / "state"), str(out), str(PROBE)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=base_env(),
            cwd=REPO,
        )


async def test_an_idle_forked_instance_exits_when_its_owner_dies(tmp_path) -> None:
    out = tmp_path / "pids.json"
    owner = start_owner(tmp_path, out)
    pids: dict[str, int] = {}
    try:
        await until(out.exists, "the owner's instance", timeout=60)
        pids = json.loads(out.read_text())
        assert not gone(pids["child"])
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        await until(lambda: gone(pids["parent"]), "the parent to follow its owner")
        await until(lambda: gone(pids["child"]), "the idle child to follow its owner")
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(30)
        for pid in pids.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_forking_can_be_turned_off(monkeypatch, tmp_path) -> None:
    from cattery.settings import Settings

    monkeypatch.setenv("CATTERY_BACKEND_FORK", "0")
    assert Settings().backend_fork is False
    plain = LocalBackend(tmp_path, lambda i, ln: None, lambda i, c, m: None, fork=False)
    assert not plain.forking
