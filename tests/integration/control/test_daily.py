"""``createDailyRoom``: a room and meeting tokens from Daily's REST API (a local stand-in here).

The control plane is the production code with ``DAILY_API_URL`` pointed at the stand-in; the
probe bot never joins the room, it only reports the room URL and token it was given.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.control.helpers import (
    refused,
    running_control,
    start,
    wait_ended,
    wait_pool,
)
from tests.support.control import ControlPlane
from tests.support.daily_standin import STANDIN_DOMAIN, DailyStandin
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"
MAX_SESSION = 600


@pytest.fixture
def control(daily_control: ControlPlane) -> ControlPlane:
    return daily_control


def test_create_daily_room(control: ControlPlane, daily: DailyStandin, tmp_path: Path) -> None:
    control.deploy(
        "probe",
        PROBE,
        maxSessionDuration=MAX_SESSION,
        autoScaling={"minAgents": 1, "maxAgents": 1},
    )
    key = control.public_key()
    report = tmp_path / "report.json"
    before = time.time()
    resp = start(
        control,
        key,
        "probe",
        {"report_to": str(report)},
        createDailyRoom=True,
        dailyRoomProperties={"enable_recording": "cloud", "max_participants": 2},
        dailyMeetingTokenProperties={"user_name": "alice", "start_video_off": True},
    )
    after = time.time()
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert set(answer) == {"sessionId", "dailyRoom", "dailyToken"}, answer

    # One private room, with the caller's properties and the session's expiry.
    (room_request,) = daily.recorded("POST", "/rooms")
    assert room_request.authorization == f"Bearer {daily.api_key}"
    assert room_request.body["privacy"] == "private"
    props = room_request.body["properties"]
    assert props["enable_recording"] == "cloud" and props["max_participants"] == 2
    assert int(before) + MAX_SESSION <= props["exp"] <= after + MAX_SESSION
    assert props["eject_at_room_exp"] is True
    (room,) = daily.rooms.values()
    assert answer["dailyRoom"] == room["url"]
    assert room["url"].startswith(STANDIN_DOMAIN)

    # The client's token: its properties, this room, not an owner, expiring with the room.
    client = daily.tokens[answer["dailyToken"]]
    assert client["user_name"] == "alice" and client["start_video_off"] is True
    assert client["room_name"] == room["name"]
    assert client["is_owner"] is False
    assert client["exp"] == props["exp"]

    # The bot got the room and its own owner token, as Daily session arguments.
    got = json.loads(wait_for(lambda: report.exists() and report.read_text(), what="report"))
    assert got["type"] == "DailySessionArguments"
    assert got["room_url"] == room["url"]
    assert got["session_id"] == answer["sessionId"]
    assert got["token"] != answer["dailyToken"]
    bot = daily.tokens[got["token"]]
    assert bot["is_owner"] is True and bot["room_name"] == room["name"]
    assert bot["exp"] == props["exp"]
    assert len(daily.recorded("POST", "/meeting-tokens")) == 2
    assert wait_ended(control, "probe", answer["sessionId"])["endState"] == "completed"


def test_daily_errors_release_the_instance(control: ControlPlane, daily: DailyStandin) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 1, "maxAgents": 1})
    key = control.public_key()
    wait_pool(control, "probe", idle=1, busy=0)

    daily.fail_next("/rooms", 500, "server-error", "the stand-in fails on purpose")
    body = refused(start(control, key, "probe", createDailyRoom=True), 502, "DAILY_API_ERROR")
    assert "500" in body["error"] and "fails on purpose" in body["error"]
    assert daily.api_key not in body["error"]

    # Daily's 400 is the caller's: its message comes back as a 400.
    daily.fail_next("/meeting-tokens", 400, "invalid-request-error", "bad token property")
    body = refused(
        start(control, key, "probe", createDailyRoom=True, dailyMeetingTokenProperties={"x": 1}),
        400,
        "DAILY_BAD_REQUEST",
    )
    assert "bad token property" in body["error"]

    # A bad exp is refused before Daily is asked.
    rooms_before = len(daily.recorded("POST", "/rooms"))
    refused(
        start(control, key, "probe", createDailyRoom=True, dailyRoomProperties={"exp": "soon"}),
        400,
    )
    assert len(daily.recorded("POST", "/rooms")) == rooms_before

    # maxAgents is 1: a leaked instance would make this start a 429.
    wait_pool(control, "probe", busy=0)
    resp = start(control, key, "probe", {"action": "sleep", "seconds": 0})
    assert resp.status_code == 200, resp.text
    assert wait_ended(control, "probe", resp.json()["sessionId"])["endState"] == "completed"


def test_missing_daily_api_key_is_a_400(tmp_path: Path, control_env: dict[str, str]) -> None:
    env = {**control_env, "DAILY_API_KEY": "", "DAILY_API_URL": ""}
    with running_control(tmp_path, **env) as control:
        control.deploy("probe", PROBE, autoScaling={"minAgents": 1, "maxAgents": 1})
        key = control.public_key()
        body = refused(start(control, key, "probe", createDailyRoom=True), 400)
        assert "DAILY_API_KEY" in body["error"]
        wait_pool(control, "probe", idle=1, busy=0)
