"""The pipecat-base contract, driven over HTTP and WebSocket against `cattery runtime`: as a
process, and as a container of a user's image built on cattery-base."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from cattery.runtime.bodies import encode_ws_body
from tests.support.containers import RuntimeContainer
from tests.support.processes import EXAMPLES, TEST_BOTS
from tests.support.telephony import TwilioCall
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"


@pytest.fixture(params=["process", pytest.param("container", marks=pytest.mark.container)])
def start_runtime(
    request: pytest.FixtureRequest, start_runtime: Callable, tmp_path: Path
) -> Iterator[Callable]:
    """Each test runs on a ``cattery runtime`` process, then on a container of the bot's
    image (the three-line Dockerfile on cattery-base), with ``tmp_path`` shared."""
    if request.param == "process":
        yield start_runtime
        return
    client = request.getfixturevalue("docker_client")
    image_of = request.getfixturevalue("user_image_of")
    started: list[RuntimeContainer] = []

    def start(bot: Path, ready: bool = True, **env: str) -> RuntimeContainer:
        rt = RuntimeContainer(client, image_of(bot), mounts=[tmp_path], env=env).start()
        started.append(rt)
        return rt.wait_ready() if ready else rt

    try:
        yield start
    finally:
        for rt in started:
            rt.stop()


#: how a request becomes ``bot()``'s session arguments is the runtime's own logic, the same
#: in a container: these run on a process only (the container cases keep what a container
#: can change: the network, signals, probes, an app's routes)
PROCESS_ONLY = pytest.mark.parametrize("start_runtime", ["process"], indirect=True)


def read_report(path: Path) -> dict:
    return json.loads(wait_for(lambda: path.exists() and path.read_text(), what=str(path)))


@PROCESS_ONLY
def test_daily_headers_build_daily_session_arguments(start_runtime, tmp_path: Path) -> None:
    rt = start_runtime(PROBE)
    session_id = str(uuid.uuid4())
    report = tmp_path / "report.json"
    resp = httpx.post(
        rt.url + "/bot",
        json={"report_to": str(report), "hello": "world"},
        headers={
            "x-daily-room-url": "https://example.daily.co/room",
            "x-daily-room-token": "room-token",
            "x-daily-session-id": session_id,
        },
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json() == {}
    got = read_report(report)
    assert got["room_url"] == "https://example.daily.co/room"
    assert got["token"] == "room-token"
    assert got["session_id"] == session_id
    assert got["body"] == {"report_to": str(report), "hello": "world"}
    assert {"DailyRunnerArguments", "DailySessionArguments"} <= set(got["isinstance"])


@PROCESS_ONLY
def test_plain_post_builds_pipecat_session_arguments(start_runtime, tmp_path: Path) -> None:
    rt = start_runtime(PROBE)
    report = tmp_path / "report.json"
    session_id = str(uuid.uuid4())
    resp = httpx.post(
        rt.url + "/bot",
        json={"report_to": str(report)},
        headers={"x-daily-session-id": session_id},
        timeout=30,
    )
    assert resp.status_code == 200
    assert resp.headers["x-cattery-end-state"] == "completed"
    got = read_report(report)
    assert got["session_id"] == session_id and got["room_url"] is None
    assert {"RunnerArguments", "PipecatSessionArguments"} <= set(got["isinstance"])
    assert "DailyRunnerArguments" not in got["isinstance"]


@PROCESS_ONLY
async def test_websocket_builds_websocket_session_arguments(start_runtime, tmp_path: Path) -> None:
    rt = start_runtime(PROBE)
    report = tmp_path / "report.json"
    session_id = str(uuid.uuid4())
    body = encode_ws_body({"report_to": str(report), "caller": "+15550100"})
    async with websockets.connect(
        f"{rt.ws_url}/ws?body={body}", additional_headers={"x-daily-session-id": session_id}
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()  # the bot returns at once and the runtime closes the socket
    got = read_report(report)
    assert got["session_id"] == session_id and got["has_websocket"]
    assert got["body"] == {"report_to": str(report), "caller": "+15550100"}
    assert {"WebSocketRunnerArguments", "WebSocketSessionArguments"} <= set(got["isinstance"])


async def test_twilio_echo_returns_audio_and_tags_logs(start_runtime) -> None:
    rt = start_runtime(EXAMPLES / "echo-twilio")
    session_id = str(uuid.uuid4())
    call = TwilioCall(custom_parameters={"caller": "test"})
    await call.play(f"{rt.ws_url}/ws", seconds=2.0, headers={"x-daily-session-id": session_id})
    assert call.received_seconds >= 1.0, f"echoed {call.received_seconds:.2f} s of 2 s"

    logs = wait_for(lambda: "Stopping bot session" in rt.logs() and rt.logs(), what="session end")
    lines = logs.splitlines()
    start = next(
        i for i, ln in enumerate(lines) if "Starting bot session" in ln and session_id in ln
    )
    end = next(i for i, ln in enumerate(lines) if "Stopping bot session" in ln and session_id in ln)
    session_lines = [
        ln
        for ln in lines[start : end + 1]
        if re.match(r"^\d{4}-\d\d-\d\d ", ln) and " | bot:" in ln
    ]
    assert any("Twilio stream" in ln for ln in session_lines)
    for line in session_lines:
        assert f"| {session_id} - " in line, line
    assert "deprecated" not in logs.lower()  # the example uses Pipecat's current API


def test_custom_routes_from_pipecatcloud_system_app(start_runtime) -> None:
    rt = start_runtime(EXAMPLES / "session-routes")
    with httpx.Client(base_url=rt.url, timeout=30) as client:
        assert client.get("/messages").status_code == 409  # no session yet
        with httpx.Client(base_url=rt.url, timeout=60) as bot_client:
            import threading

            result: dict = {}
            t = threading.Thread(
                target=lambda: result.update(resp=bot_client.post("/bot", json={"name": "Ada"}))
            )
            t.start()
            wait_for(lambda: client.get("/messages").status_code == 200, what="session routes")
            reply = client.post("/messages", json={"text": "hi"})
            assert reply.status_code == 200
            assert reply.json() == {"reply": "Hello Ada. You said: hi"}
            assert client.get("/messages").json()["messages"][0] == {"role": "user", "text": "hi"}
            assert client.post("/end").status_code == 200
            t.join(30)
            assert result["resp"].status_code == 200
            assert result["resp"].headers["x-cattery-end-state"] == "completed"


def test_max_session_seconds_cancels_a_bot_that_runs_forever(start_runtime) -> None:
    rt = start_runtime(PROBE)
    resp = httpx.post(
        rt.url + "/bot",
        json={"action": "forever"},
        headers={"X-PCC-Max-Session-Seconds": "2"},
        timeout=30,
    )
    assert resp.status_code == 200
    assert resp.headers["x-cattery-end-state"] == "terminated"
    assert "reached its max duration of 2 s" in rt.logs()


def test_readyz_and_livez(start_runtime) -> None:
    rt = start_runtime(PROBE)
    assert httpx.get(rt.url + "/readyz").json() == {"status": "ok"}
    assert httpx.get(rt.url + "/livez").json() == {"status": "ok"}
