"""Daily PSTN dial-in: Daily's webhook makes a SIP room (at the Daily stand-in) and a session
whose bot parses ``DailyDialinRequest`` from its body. The bot never joins the room."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.control.helpers import (
    list_sessions,
    put_secrets,
    refused,
    start_session,
    stop_session,
    wait_ended,
    wait_pool,
)
from tests.support.control import ORG, ControlPlane
from tests.support.daily_standin import DailyStandin
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

DIALIN_BOT = TEST_BOTS / "dialin"
PROBE = TEST_BOTS / "probe"
MAX_SESSION = 300


@pytest.fixture
def control(daily_control: ControlPlane) -> ControlPlane:
    return daily_control


def deploy_dialin_bot(control: ControlPlane, report: Path, **secrets: str) -> None:
    put_secrets(control, "dialin", DIALIN_REPORT=str(report), **secrets)
    control.deploy(
        "phone",
        DIALIN_BOT,
        secretSet="dialin",
        maxSessionDuration=MAX_SESSION,
        autoScaling={"minAgents": 1, "maxAgents": 1},
    )


def webhook(
    control: ControlPlane, payload: object, agent: str = "phone", org: str = ORG, **headers: str
) -> httpx.Response:
    """As Daily calls it: no API key."""
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(
        f"{control.url}/v1/public/webhooks/{org}/{agent}/dialin",
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=60,
    )


def call_payload() -> dict:
    return {
        "From": "+15551234567",
        "To": "+15559876543",
        "callId": str(uuid.uuid4()),
        "callDomain": str(uuid.uuid4()),
        "sipHeaders": {"X-Customer": "42"},
    }


def test_dialin_starts_a_session_with_a_dialin_request(
    control: ControlPlane, daily: DailyStandin, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    deploy_dialin_bot(control, report)
    call = call_payload()
    before = time.time()
    resp = webhook(control, call)
    after = time.time()
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert set(answer) == {"status", "sessionId", "dailyRoom"}, answer  # no meeting token

    (room_request,) = daily.recorded("POST", "/rooms")
    props = room_request.body["properties"]
    assert props["sip"] == {
        "display_name": call["From"],
        "video": False,
        "sip_mode": "dial-in",
        "num_endpoints": 1,
    }
    assert int(before) + MAX_SESSION <= props["exp"] <= after + MAX_SESSION
    (room,) = daily.rooms.values()
    assert answer["dailyRoom"] == room["url"]

    got = json.loads(wait_for(lambda: report.exists() and report.read_text(), what="report"))
    assert got["parsed"] is True, got
    assert got["type"] == "DailySessionArguments"
    assert got["session_id"] == answer["sessionId"]
    assert got["room_url"] == room["url"]
    assert daily.tokens[got["token"]]["is_owner"] is True
    assert got["request"] == {
        "dialin_settings": {
            "call_id": call["callId"],
            "call_domain": call["callDomain"],
            "To": call["To"],
            "From": call["From"],
            "sip_headers": {"X-Customer": "42"},
        },
        "daily_api_key": daily.api_key,
        "daily_api_url": daily.url,
    }
    assert wait_ended(control, "phone", answer["sessionId"])["endState"] == "completed"


def test_dialin_test_payload_and_bad_requests_start_nothing(
    control: ControlPlane, daily: DailyStandin, tmp_path: Path
) -> None:
    deploy_dialin_bot(control, tmp_path / "report.json")
    wait_pool(control, "phone", idle=1, busy=0)

    # Daily's check of a new dial-in config.
    for payload in ({"Test": "test"}, {"test": True, "To": "+15559876543"}):
        resp = webhook(control, payload)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"status": "OK"}

    refused(webhook(control, call_payload(), agent="nobody"), 404)
    refused(webhook(control, call_payload(), org="no-such-org"), 404)
    refused(webhook(control, b"not json"), 400)
    refused(webhook(control, [call_payload()]), 400)
    for field in ("From", "To", "callId", "callDomain"):
        refused(webhook(control, {k: v for k, v in call_payload().items() if k != field}), 400)
    refused(webhook(control, {**call_payload(), "callId": "not-a-uuid"}), 400)
    refused(webhook(control, {**call_payload(), "From": ""}), 400)
    refused(webhook(control, {**call_payload(), "sipHeaders": ["x"]}), 400)

    assert daily.recorded("POST", "/rooms") == []
    wait_pool(control, "phone", idle=1, busy=0)


def test_dialin_signed_by_daily_when_the_agent_has_an_hmac_secret(
    control: ControlPlane, daily: DailyStandin, tmp_path: Path
) -> None:
    secret = base64.b64encode(b"a dial-in hmac secret of the test").decode()
    deploy_dialin_bot(control, tmp_path / "report.json", PINLESS_HMAC_SECRET=secret)
    raw = json.dumps({"Test": "test"}).encode()

    def signed(timestamp: str, body: bytes, key: str = secret) -> dict[str, str]:
        mac = hmac.new(base64.b64decode(key), timestamp.encode() + b"." + body, hashlib.sha256)
        return {
            "x-pinless-timestamp": timestamp,
            "x-pinless-signature": base64.b64encode(mac.digest()).decode(),
        }

    now = str(int(time.time()))
    refused(webhook(control, raw), 401)
    other = base64.b64encode(b"someone else's secret").decode()
    refused(webhook(control, raw, **signed(now, raw, other)), 401)
    tampered = json.dumps({"Test": "test", "x": 1}).encode()
    refused(webhook(control, tampered, **signed(now, raw)), 401)
    resp = webhook(control, raw, **signed(now, raw))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "OK"}
    assert daily.recorded("POST", "/rooms") == []


def test_a_dialin_to_a_full_agent_is_refused_and_recorded(
    control: ControlPlane, daily: DailyStandin
) -> None:
    control.deploy("phone", PROBE, autoScaling={"minAgents": 1, "maxAgents": 1})
    busy = start_session(control, control.public_key(), "phone", {"action": "forever"})

    body = refused(webhook(control, call_payload()), 429, "PCC-AGENT-AT-CAPACITY")
    assert "capacity" in body["error"], body
    assert daily.recorded("POST", "/rooms") == []  # refused before any room was made
    (missed,) = [s for s in list_sessions(control, "phone") if s["sessionId"] != busy]
    assert missed["endState"] == "ended_before_agent_start" and missed["endedAt"], missed
    assert missed["transport"] == "daily", missed

    stop_session(control, "phone", busy)
    wait_pool(control, "phone", idle=1, busy=0)
