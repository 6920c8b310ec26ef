"""Every bad input to the runtime gets a clear answer, and the process keeps serving."""

from __future__ import annotations

import subprocess

import httpx
import pytest

from tests.support.processes import CATTERY, REPO, TEST_BOTS, base_env

PROBE = TEST_BOTS / "probe"


@pytest.mark.parametrize(
    ("bot", "problem"),
    [
        ("missing-folder", "no such file"),
        ("no-bot", "defines no bot() function"),
        ("not-async", "bot must be an async function"),
        ("import-error", "raised on import: ImportError"),
    ],
)
def test_unloadable_bot_exits_2_with_one_line(bot: str, problem: str) -> None:
    path = TEST_BOTS / bot
    done = subprocess.run(
        [*CATTERY, "runtime", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        env=base_env(),
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 2
    error_lines = [
        ln for ln in done.stderr.splitlines() if ln.startswith("cattery runtime: error:")
    ]
    assert len(error_lines) == 1, done.stderr
    assert str(path) in error_lines[0] and problem in error_lines[0]
    assert "Uvicorn running" not in done.stderr


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b'"text"', b"42"])
def test_bot_body_must_be_a_json_object(start_runtime, body: bytes) -> None:
    rt = start_runtime(PROBE)
    resp = httpx.post(rt.url + "/bot", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["code"] == "GENERIC_BAD_REQUEST"
    assert "JSON object" in resp.json()["error"]


def test_bad_max_session_seconds_is_a_400(start_runtime) -> None:
    rt = start_runtime(PROBE)
    resp = httpx.post(rt.url + "/bot", json={}, headers={"X-PCC-Max-Session-Seconds": "soon"})
    assert resp.status_code == 400 and set(resp.json()) == {"code", "error"}


def test_bot_exception_is_logged_and_the_process_keeps_serving(start_runtime) -> None:
    rt = start_runtime(PROBE)
    session_id = "5f0e7f0e-0000-4000-8000-000000000001"
    resp = httpx.post(
        rt.url + "/bot",
        json={"action": "crash"},
        headers={"x-daily-session-id": session_id},
        timeout=30,
    )
    assert resp.status_code == 200
    assert resp.headers["x-cattery-end-state"] == "agent_error"
    logs = rt.logs()
    assert f"| {session_id} - Exception running bot()" in logs
    assert "Traceback" in logs and "probe bot crashed on purpose" in logs
    ok = httpx.post(rt.url + "/bot", json={"action": "sleep", "seconds": 0}, timeout=30)
    assert ok.headers["x-cattery-end-state"] == "completed"
