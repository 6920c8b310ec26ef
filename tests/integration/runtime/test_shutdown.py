"""Draining shutdown: refuse new sessions, finish running ones, exit 0 within the budget."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"


def _start_session(url: str, body: dict, result: dict) -> threading.Thread:
    def run() -> None:
        result["resp"] = httpx.post(url + "/bot", json=body, timeout=60)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_refuses_new_sessions_and_lets_running_ones_finish(start_runtime) -> None:
    rt = start_runtime(PROBE)
    result: dict = {}
    thread = _start_session(rt.url, {"action": "sleep", "seconds": 3}, result)
    wait_for(lambda: "probe bot action 'sleep'" in rt.logs(), what="session start")
    rt.signal(signal.SIGTERM)
    wait_for(lambda: "draining" in rt.logs(), what="drain")
    refused = httpx.post(rt.url + "/bot", json={}, timeout=10)
    assert refused.status_code == 503
    assert refused.json()["code"] == "SERVICE_UNAVAILABLE"
    assert httpx.get(rt.url + "/readyz").status_code == 503
    thread.join(30)
    assert result["resp"].status_code == 200
    assert result["resp"].headers["x-cattery-end-state"] == "completed"
    assert rt.wait(30) == 0


def test_shutdown_timeout_cuts_off_a_stuck_session(start_runtime) -> None:
    rt = start_runtime(PROBE, SHUTDOWN_TIMEOUT="1")
    result: dict = {}
    thread = _start_session(rt.url, {"action": "forever"}, result)
    wait_for(lambda: "probe bot action 'forever'" in rt.logs(), what="session start")
    t0 = time.monotonic()
    rt.signal(signal.SIGTERM)
    assert rt.wait(30) == 0
    elapsed = time.monotonic() - t0
    thread.join(30)
    assert result["resp"].headers["x-cattery-end-state"] == "terminated"
    assert "Shutdown timeout reached; cutting off 1 session(s)" in rt.logs()
    assert elapsed < 20  # a sanity bound on "cut off", not a timing assertion


def test_one_session_instance_exits_after_its_session(start_runtime) -> None:
    from tests.support.processes import CATTERY, ServerProcess, base_env

    rt = start_runtime(PROBE)  # a normal instance keeps serving after a session
    httpx.post(rt.url + "/bot", json={"action": "sleep", "seconds": 0}, timeout=30)
    assert rt.proc.poll() is None

    one = ServerProcess(
        [*CATTERY, "runtime", str(PROBE), "--one-session"],
        rt.log_path.with_name("one-session.log"),
        env=base_env(),
    ).start()
    try:
        one.wait_ready()
        resp = httpx.post(one.url + "/bot", json={"action": "sleep", "seconds": 0}, timeout=30)
        assert resp.headers["x-cattery-end-state"] == "completed"
        assert one.wait(30) == 0
        assert "Session ended with end state completed" in one.logs()
    finally:
        one.stop()


def test_an_instance_that_loses_its_lease_ends_its_session_and_exits(
    start_runtime, tmp_path
) -> None:
    lease = tmp_path / "lease"
    lease.touch()
    rt = start_runtime(PROBE, CATTERY_LEASE_FILE=str(lease), CATTERY_LEASE_SECONDS="2")
    result: dict = {}
    thread = _start_session(rt.url, {"action": "forever"}, result)
    wait_for(lambda: "probe bot action 'forever'" in rt.logs(), what="session start")
    # renewed, it keeps serving: touch it until a later check than the lease has passed
    renewed_until = time.monotonic() + 3
    while time.monotonic() < renewed_until:
        lease.touch()
        assert rt.proc.poll() is None
        time.sleep(0.2)
    assert rt.wait(30) == 0  # then no longer renewed: it lets the session go and exits
    thread.join(30)
    assert result["resp"].headers["x-cattery-end-state"] == "terminated"
    assert "Lost its lease" in rt.logs()
