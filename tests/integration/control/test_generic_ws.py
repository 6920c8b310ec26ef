"""Generic WebSocket clients, as Pipecat Cloud offers them.

A start with ``transport: "websocket"`` answers ``wsUrl`` (``/ws/generic/AGENT.ORG``), a
single-use HMAC ``token`` and the body as base64; connecting there with the token reaches
the bot (the probe bot reports what it got) with that body. Replayed, forged and foreign
tokens are refused with 4003; a full agent refuses with 1013 and records the session.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import websockets

from tests.integration.control.helpers import (
    get_session,
    refused,
    start,
    start_session,
    stop_session,
    wait_ended,
    wait_pool,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"
#: base64 of this body's JSON has "+" and "/": sent unescaped, as clients append it
NOTE = "~~~>>>???"


def websocket_start(control: ControlPlane, key: str, body: object = None) -> dict:
    resp = start(control, key, "probe", body, transport="websocket")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def closed_with(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Connect and wait to be closed: the close code and reason."""
    async with websockets.connect(url, additional_headers=headers or {}) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def test_a_generic_client_reaches_the_bot_with_its_body(
    control: ControlPlane, tmp_path: Path
) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 1, "maxAgents": 1})
    wait_pool(control, "probe", idle=1)
    key = control.public_key()
    report = tmp_path / "report.json"
    body = {"action": "report", "report_to": str(report), "note": NOTE}

    started = websocket_start(control, key, body)
    assert set(started) == {"sessionId", "wsUrl", "token", "body"}, started
    assert started["wsUrl"] == f"{control.process.ws_url}/ws/generic/probe.{ORG}"
    assert json.loads(base64.b64decode(started["body"])) == body
    assert "+" in started["body"] and "/" in started["body"]

    url = f"{started['wsUrl']}?token={started['token']}&body={started['body']}"
    code, _ = await closed_with(url)  # the probe returns at once; its close comes through
    assert code == 1000

    got = wait_for(lambda: report.exists() and json.loads(report.read_text()), what="report")
    assert got["has_websocket"] is True
    assert got["transport_type"] == "websocket"  # as Pipecat's runner marks a plain client
    assert got["body"] == body
    assert got["session_id"] == started["sessionId"]
    session = wait_ended(control, "probe", started["sessionId"])
    assert session["endState"] == "completed" and session["transport"] == "websocket", session

    # The token is used up: replayed in the query, the path or the header, it is refused.
    replays = [
        (url, None),
        (f"{started['wsUrl']}/{started['token']}", None),
        (started["wsUrl"], {"Authorization": f"Bearer {started['token']}"}),
    ]
    for replay, headers in replays:
        code, reason = await closed_with(replay, headers)
        assert code == 4003, (replay, code, reason)


async def test_forged_and_foreign_tokens_are_refused(control: ControlPlane) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 1})
    control.deploy("other", PROBE, autoScaling={"minAgents": 0, "maxAgents": 1})
    key = control.public_key()
    started = websocket_start(control, key)
    assert set(started) == {"sessionId", "wsUrl", "token"}, started  # no body, no "body"
    token, ws_url = started["token"], started["wsUrl"]
    base = control.process.ws_url

    payload, _, signature = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sh"] == f"probe.{ORG}" and claims["sid"] == started["sessionId"]
    # A payload rewritten for another agent keeps its old signature: forged.
    claims["sh"] = f"other.{ORG}"
    rewritten = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    attempts = [
        ws_url,  # no token at all
        f"{ws_url}?token=not-a-token",
        f"{ws_url}?token={payload}.{signature[::-1]}",
        f"{base}/ws/generic/other.{ORG}?token={rewritten}.{signature}",
        f"{base}/ws/generic/other.{ORG}?token={token}",  # a real token, for another agent
        f"{base}/ws/twilio/{token}",  # a client's token on a carrier's route
    ]
    for url in attempts:
        code, reason = await closed_with(url)
        assert code == 4003, (url, code, reason)
    with control.client() as c:
        for agent in ("probe", "other"):
            listed = c.get(f"/v1/organizations/{ORG}/services/{agent}/sessions").json()
            assert listed["sessions"] == [], listed  # refused before any session

    # Still unused after all that: the real token works once.
    code, _ = await closed_with(f"{ws_url}?token={token}")
    assert code == 1000
    assert wait_ended(control, "probe", started["sessionId"])["endState"] == "completed"


async def test_a_full_agent_refuses_the_connection_and_records_it(control: ControlPlane) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 1, "maxAgents": 1})
    key = control.public_key()
    busy = start_session(control, key, "probe", {"action": "forever"})
    started = websocket_start(control, key, {"action": "report"})

    code, reason = await closed_with(f"{started['wsUrl']}?token={started['token']}")
    assert code == 1013 and reason.startswith("PCC-AGENT-AT-CAPACITY"), (code, reason)
    session = get_session(control, "probe", started["sessionId"])
    assert session["endState"] == "ended_before_agent_start", session
    assert session["transport"] == "websocket" and session["endedAt"], session

    stop_session(control, "probe", busy)
    wait_ended(control, "probe", busy)
    wait_pool(control, "probe", idle=1, busy=0)


def test_websocket_start_body_limit_and_unknown_agent(control: ControlPlane) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 1})
    key = control.public_key()
    just_fits = {"pad": "x" * (4096 - len('{"pad":""}'))}
    assert "body" in websocket_start(control, key, just_fits)
    refused(start(control, key, "probe", {"pad": "x" * 4096}, transport="websocket"), 413)
    refused(start(control, key, "nobody", transport="websocket"), 404)
