"""The Session API reaches a bot's own routes only: not the runtime's contract routes, not
with the platform's headers, not with cookies unless the agent opts in."""

from __future__ import annotations

from pathlib import Path

from tests.integration.control.helpers import refused, start, start_session, wait_ended, wait_pool
from tests.support.control import ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

CONTRACT_PATHS = (
    "bot",
    "ws",
    "readyz",
    "livez",
    "whatsapp",
    "BOT",
    "bot/",
    "./bot",
    "x/../bot",
    "%2e%2e/bot",
    "readyz?x=1",
)
FORGED = {
    "X-PCC-Max-Session-Seconds": "1",
    "X-Daily-Room-Url": "https://elsewhere.example/room",
    "X-Daily-Room-Token": "forged",
    "X-Daily-Transport-Type": "webrtc",
    "X-Cattery-Anything": "forged",
}


def test_ten_bot_posts_leave_one_run_and_the_pool_right(
    control: ControlPlane, tmp_path: Path
) -> None:
    control.deploy("probe", TEST_BOTS / "probe", autoScaling={"minAgents": 1, "maxAgents": 1})
    key = control.public_key()
    done, first, extra = tmp_path / "done", tmp_path / "first.json", tmp_path / "extra.json"
    session_id = start_session(
        control, key, "probe", {"action": "until", "path": str(done), "report_to": str(first)}
    )
    wait_for(first.exists, what="the session's bot() run")
    base = f"/v1/public/probe/sessions/{session_id}"
    with control.client(key) as c:
        for _ in range(10):
            resp = c.post(f"{base}/bot", json={"action": "report", "report_to": str(extra)})
            refused(resp, 404)
        for path in CONTRACT_PATHS:
            refused(
                c.request("GET" if "bot" not in path.lower() else "POST", f"{base}/{path}"), 404
            )
    assert wait_pool(control, "probe", busy=1, total=1)
    refused(start(control, key, "probe", {"action": "report"}), 429)
    done.touch()
    assert wait_ended(control, "probe", session_id)["endState"] == "completed"
    assert not extra.exists(), "a caller ran bot() a second time in the session's instance"
    wait_pool(control, "probe", busy=0, idle=1, total=1)


def test_platform_headers_and_cookies_stay_out(control: ControlPlane) -> None:
    control.deploy("echo", TEST_BOTS / "session-echo", autoScaling={"minAgents": 1})
    key = control.public_key()
    session_id = start_session(control, key, "echo", {})
    path = f"/v1/public/echo/sessions/{session_id}/echo/x"
    with control.client(key) as c:
        resp = c.post(path, headers={**FORGED, "Cookie": "sid=caller", "X-Own": "kept"})
        assert resp.status_code == 200, resp.text
        seen = resp.json()["headers"]
        assert seen["x-own"] == "kept"
        assert "cookie" not in seen
        assert "forged" not in seen.values() and "1" != seen.get("x-pcc-max-session-seconds")
        for name in FORGED:
            if name.lower() != "x-daily-session-id":
                assert name.lower() not in seen, name
        assert seen["x-daily-session-id"] == session_id  # ours, set by the platform
        assert resp.headers.get_list("set-cookie") == []
        assert c.post(f"/v1/public/echo/sessions/{session_id}/end").status_code == 200
    assert wait_ended(control, "echo", session_id)["endState"] == "completed"


def test_an_agent_may_opt_in_to_cookies(control: ControlPlane) -> None:
    control.deploy(
        "echo", TEST_BOTS / "session-echo", autoScaling={"minAgents": 1}, sessionCookies=True
    )
    key = control.public_key()
    session_id = start_session(control, key, "echo", {})
    with control.client(key) as c:
        resp = c.post(f"/v1/public/echo/sessions/{session_id}/echo/x", headers={"Cookie": "a=b"})
        assert resp.json()["headers"]["cookie"] == "a=b"
        assert [v.split(";")[0] for v in resp.headers.get_list("set-cookie")] == [
            "first=1",
            "second=2",
        ]
        assert c.post(f"/v1/public/echo/sessions/{session_id}/end").status_code == 200
    assert wait_ended(control, "echo", session_id)["endState"] == "completed"
