"""The local backend with real ``cattery runtime`` processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from cattery.backends.base import (
    InstanceFailed,
    InstanceHandle,
    InstanceSpec,
    InstanceStartTimeout,
    InstanceStatus,
)
from cattery.backends.local import AdoptRecord, LocalBackend, LocalInstanceHandle
from cattery.backends.local.process import instance_env
from cattery.pools import Pool, PoolOptions
from tests.support.processes import REPO, TEST_BOTS, base_env, gone
from tests.support.waiting import async_wait_for, until

PROBE = TEST_BOTS / "probe"
TOKEN_HEADER = "x-cattery-instance-token"
TEST_ENV = {"CATTERY_ICE_FALLBACK_URLS": "", "PIPECAT_LOG_LEVEL": "DEBUG"}


def probe_spec(**env: str) -> InstanceSpec:
    return InstanceSpec(
        agent_key="org/probe", deployment_id="d1", image=str(PROBE), env={**TEST_ENV, **env}
    )


class Sinks:
    """Collects what a backend reports: lines and metrics samples per instance."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.samples: list[tuple[str, float, int]] = []

    def line(self, instance_id: str, line: str) -> None:
        self.lines.append((instance_id, line))

    def metrics(self, instance_id: str, cpu: float, memory: int) -> None:
        self.samples.append((instance_id, cpu, memory))

    def text(self, instance_id: str) -> str:
        return "\n".join(line for i, line in self.lines if i == instance_id)

    async def wait_for_line(self, instance_id: str, fragment: str) -> None:
        async def seen() -> bool:
            return fragment in self.text(instance_id)

        await async_wait_for(seen, timeout=30, what=f"log line {fragment!r}")


@pytest.fixture
def sinks() -> Sinks:
    return Sinks()


@pytest.fixture
async def backend(tmp_path: Path, sinks: Sinks) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "state", sinks.line, sinks.metrics, sample_interval=0.2)
    await backend.start()
    yield backend
    await backend.aclose()


async def test_an_instance_serves_one_session_and_closes(backend, sinks) -> None:
    handle = await backend.spawn(probe_spec())
    assert isinstance(handle, InstanceHandle)
    assert handle.id.startswith("inst_") and handle.status == InstanceStatus.STARTING
    assert handle.address.startswith("http://127.0.0.1:")
    assert psutil.Process(handle.pid).cwd() == str(PROBE.resolve())
    assert os.getpgid(handle.pid) == handle.pid  # its own session and process group

    await handle.ready(timeout=60)
    assert handle.status == InstanceStatus.READY
    await until(lambda: any(s[0] == handle.id for s in sinks.samples), "a metrics sample")
    _, cpu, memory = next(s for s in sinks.samples if s[0] == handle.id)
    assert cpu >= 0 and memory > 0

    async with httpx.AsyncClient(base_url=handle.address, timeout=30) as client:
        assert (await client.get("/livez")).status_code == 200
        refused = await client.post("/bot", json={"action": "sleep", "seconds": 0})
        assert refused.status_code == 401
        resp = await client.post(
            "/bot",
            json={"action": "sleep", "seconds": 0},
            headers={TOKEN_HEADER: handle.token},
        )
    assert resp.status_code == 200
    assert resp.headers["x-cattery-end-state"] == "completed"
    await sinks.wait_for_line(handle.id, "Starting bot session")

    assert await handle.wait() == 0  # --one-session: the instance exits after its session
    assert handle.status == InstanceStatus.STOPPED
    await handle.aclose()
    await handle.aclose()
    assert handle.status == InstanceStatus.STOPPED
    assert not psutil.pid_exists(handle.pid)
    assert handle.log_offset == handle.log_path.stat().st_size
    assert "Session ended with end state completed" in sinks.text(handle.id)
    assert backend.handles == []


async def test_aclose_kills_a_session_that_outlives_the_grace(backend, sinks) -> None:
    handle = await backend.spawn(probe_spec())
    await handle.ready(timeout=60)
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        session = asyncio.create_task(
            client.post("/bot", json={"action": "forever"}, headers={TOKEN_HEADER: handle.token})
        )
        await sinks.wait_for_line(handle.id, "probe bot action 'forever'")

        await handle.aclose(grace=0.5)  # the runtime would drain for SHUTDOWN_TIMEOUT

        assert handle.status == InstanceStatus.STOPPED
        assert not psutil.pid_exists(handle.pid)
        with pytest.raises(httpx.HTTPError):
            await session
    assert "Received SIGTERM; draining" in sinks.text(handle.id)


async def test_drain_lets_the_session_finish(backend, sinks) -> None:
    handle = await backend.spawn(probe_spec())
    await handle.ready(timeout=60)
    async with httpx.AsyncClient(base_url=handle.address, timeout=60) as client:
        session = asyncio.create_task(
            client.post(
                "/bot",
                json={"action": "sleep", "seconds": 1},
                headers={TOKEN_HEADER: handle.token},
            )
        )
        await sinks.wait_for_line(handle.id, "probe bot action 'sleep'")
        await handle.drain(timeout=30)
        resp = await session
    assert resp.headers["x-cattery-end-state"] == "completed"
    assert handle.status == InstanceStatus.STOPPED and handle.exit_code == 0
    await handle.aclose()


async def test_ready_fails_with_the_last_log_lines(backend) -> None:
    spec = InstanceSpec("org/broken", "d1", str(TEST_BOTS / "import-error"), env=TEST_ENV)
    handle = await backend.spawn(spec)
    with pytest.raises(InstanceFailed) as caught:
        await handle.ready(timeout=60)
    assert "exited with code" in str(caught.value)
    assert "last log lines" in str(caught.value)
    assert handle.status == InstanceStatus.FAILED
    await handle.aclose()
    assert handle.status == InstanceStatus.FAILED


async def test_ready_times_out_and_kills_the_instance(tmp_path, sinks) -> None:
    # a plain process: a forked instance may well answer within the shortest budget
    backend = LocalBackend(tmp_path / "plain", sinks.line, sinks.metrics, fork=False)
    handle = await backend.spawn(probe_spec())
    with pytest.raises(InstanceStartTimeout, match="did not answer"):
        await handle.ready(timeout=0.001)
    assert handle.status == InstanceStatus.FAILED
    assert await handle.wait() is not None
    await handle.aclose()
    assert not psutil.pid_exists(handle.pid)
    await backend.aclose()


async def test_the_agent_env_reaches_the_bot(backend, tmp_path) -> None:
    handle = await backend.spawn(probe_spec(PROBE_SECRET="s3cret"))
    await handle.ready(timeout=60)
    report = tmp_path / "report.json"
    async with httpx.AsyncClient(base_url=handle.address, timeout=30) as client:
        await client.post(
            "/bot",
            json={"action": "report", "report_to": str(report)},
            headers={TOKEN_HEADER: handle.token},
        )
    assert json.loads(report.read_text())["env"] == {"PROBE_SECRET": "s3cret"}
    await handle.aclose()


def test_instance_env_drops_our_settings_and_adds_the_agents() -> None:
    ours = {"PATH": "/bin", "CATTERY_DATABASE_URL": "sqlite://", "CATTERY_INSTANCE_TOKEN": "x"}
    spec = InstanceSpec("org/a", "d1", "/bots/a", env={"OPENAI_API_KEY": "k", "PATH": "/agent"})
    env = instance_env(spec, "the-token", base=ours)
    assert env == {
        "PATH": "/agent",
        "OPENAI_API_KEY": "k",
        "PYTHONUNBUFFERED": "1",
        "CATTERY_INSTANCE_TOKEN": "the-token",
    }


async def test_backend_aclose_closes_every_instance(tmp_path, sinks) -> None:
    backend = LocalBackend(tmp_path, sinks.line, sinks.metrics)
    handles = [await backend.spawn(probe_spec()) for _ in range(2)]
    await handles[0].ready(timeout=60)
    await backend.aclose()
    for handle in handles:
        assert handle.status in (InstanceStatus.STOPPED, InstanceStatus.FAILED)
        assert not psutil.pid_exists(handle.pid)


async def test_a_pool_on_the_local_backend(backend) -> None:
    pool = Pool("org/probe", probe_spec(), PoolOptions(min_agents=1), backend)
    try:
        await pool.start()
        await until(lambda: pool.stats().idle == 1, "a warm instance", timeout=60)
        lease = await pool.acquire()
        assert lease.cold_start is False
        async with httpx.AsyncClient(base_url=lease.handle.address, timeout=30) as client:
            headers = {TOKEN_HEADER: lease.handle.token}
            resp = await client.post("/bot", json={"action": "report"}, headers=headers)
        assert resp.status_code == 200
        await pool.release(lease.handle)
        await until(lambda: lease.handle.status == InstanceStatus.STOPPED, "the used instance")
        await until(lambda: pool.stats().idle >= 1, "a warm instance again", timeout=60)
    finally:
        await pool.aclose()
    assert backend.handles == []


OWNER = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from cattery.backends.base import InstanceSpec
    from cattery.backends.local import LocalBackend

    async def main():
        state, out, image = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
        backend = LocalBackend(state, lambda i, l: None, lambda i, c, m: None)
        env = {"CATTERY_ICE_FALLBACK_URLS": "", "SHUTDOWN_TIMEOUT": "1"}
        handle = await backend.spawn(InstanceSpec("org/probe", "d1", image, env=env))
        await handle.ready(60)
        await handle.read_log()  # the record's offset is past every line printed so far
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(handle.record().to_dict()))
        tmp.rename(out)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


def start_owner(tmp_path: Path, record_path: Path) -> subprocess.Popen[bytes]:
    """A stand-in control plane: it starts one instance and writes the instance's record."""
    with (tmp_path / "owner.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", OWNER, str(tmp_path / "state"), str(record_path), str(PROBE)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=base_env(),
            cwd=REPO,
        )


async def test_an_instance_survives_its_owner_and_is_adopted(tmp_path, sinks) -> None:
    record_path = tmp_path / "record.json"
    owner = start_owner(tmp_path, record_path)
    record: AdoptRecord | None = None
    try:
        await until(record_path.exists, "the owner's record", timeout=60)
        record = AdoptRecord.from_dict(json.loads(record_path.read_text()))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{record.port}", timeout=60) as c:
            session = asyncio.create_task(
                c.post("/bot", json={"action": "forever"}, headers={TOKEN_HEADER: record.token})
            )
            await until(
                lambda: "probe bot action 'forever'" in record.log_path.read_text(), "the session"
            )

            owner.send_signal(signal.SIGKILL)  # the control plane dies
            owner.wait(30)
            await until(lambda: psutil.Process(record.pid).ppid() != owner.pid, "a new parent")
            assert not gone(record.pid)
            assert (await c.get("/livez")).status_code == 200

            backend = LocalBackend(tmp_path / "state", sinks.line, sinks.metrics, 0.2)
            handle = await backend.adopt_record(record)
            assert isinstance(handle, LocalInstanceHandle)
            assert handle.status == InstanceStatus.READY and handle.pid == record.pid
            # lines written since the record was taken reach the new sink, older ones do not
            await sinks.wait_for_line(handle.id, "probe bot action 'forever'")
            assert "Serving" not in sinks.text(handle.id)
            await until(lambda: any(s[0] == handle.id for s in sinks.samples), "a sample")

            waiting = asyncio.create_task(handle.wait())
            await handle.aclose(grace=30)  # SIGTERM: the runtime cuts the session after 1 s
            assert await waiting is None  # not our child: no exit code
            assert handle.status == InstanceStatus.STOPPED
            resp = await session
            assert resp.headers["x-cattery-end-state"] == "terminated"
        await until(lambda: gone(record.pid), "the adopted instance to exit")
        assert await backend.adopt_record(record) is None  # gone now
        await backend.aclose()
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(30)
        if record is not None and not gone(record.pid):
            os.killpg(record.pid, signal.SIGKILL)


async def test_adopt_refuses_a_reused_pid(backend, tmp_path) -> None:
    record = AdoptRecord(
        instance_id="inst_x",
        pid=os.getpid(),  # alive, but not the process the record describes
        port=1,
        token="t",
        log_path=tmp_path / "x.log",
        log_offset=0,
        spec=probe_spec(),
        create_time=1.0,
    )
    assert await backend.adopt_record(record) is None


async def test_adopt_refuses_a_dead_instance(backend) -> None:
    handle = await backend.spawn(probe_spec())
    record = handle.record()
    await handle.aclose(grace=0)
    assert await backend.adopt_record(record) is None


def test_record_round_trips_without_secrets(tmp_path) -> None:
    record = AdoptRecord(
        instance_id="inst_x",
        pid=123,
        port=4567,
        token="t",
        log_path=tmp_path / "x.log",
        log_offset=89,
        spec=probe_spec(OPENAI_API_KEY="k"),
        create_time=1700000000.25,
    )
    data = json.loads(json.dumps(record.to_dict()))
    assert "OPENAI_API_KEY" not in json.dumps(data)
    back = AdoptRecord.from_dict(data)
    assert back.pid == 123 and back.log_offset == 89 and back.spec.env == {}
    assert back.spec.image == record.spec.image and back.create_time == record.create_time


async def test_old_logs_of_instances_we_do_not_own_are_pruned(tmp_path, sinks) -> None:
    backend = LocalBackend(tmp_path / "state", sinks.line, sinks.metrics, log_retention=3600)
    await backend.start()
    try:
        old, recent = backend.instances_dir / "inst_old.log", backend.instances_dir / "inst_new.log"
        parent = backend.instances_dir / "parent-org-probe-1.log"
        for path in (old, recent, parent):
            path.write_text("a line\n")
        day_ago = time.time() - 86400
        for path in (old, parent):
            os.utime(path, (day_ago, day_ago))
        handle = await backend.spawn(probe_spec())  # the first spawn prunes
        await handle.ready(30)
        assert not old.exists() and recent.exists() and parent.exists()
        assert handle.log_path.exists()
        os.utime(handle.log_path, (day_ago, day_ago))
        assert backend.prune_logs() == 0  # an instance we own keeps its log
        await handle.aclose()
    finally:
        await backend.aclose()
