"""Carriers' media WebSockets through the control plane, with the tests playing the carrier.

Twilio, Telnyx, Plivo and Exotel calls reach the unchanged multi-transport echo bot at
``/ws/{carrier}`` (the agent named by ``serviceHost`` or Twilio's custom parameter), speak
espeak-ng speech in real time, 20 ms a frame, and hear it back. A call to a full agent is
refused with 1013 and recorded; with ``CATTERY_WS_AUTH=token`` a call without a good,
unused token is closed with 4003.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.control.helpers import (
    refused,
    running_control,
    start,
    start_session,
    stop_session,
    wait_ended,
    wait_pool,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import EXAMPLES, TEST_BOTS
from tests.support.telephony import (
    MIN_ECHO_SHARE,
    ExotelCall,
    MediaStreamCall,
    PlivoCall,
    TelnyxCall,
    TwilioCall,
    assert_heard_back,
    frames_for,
)
from tests.support.waiting import wait_for

ECHO = EXAMPLES / "multi-transport"
PROBE = TEST_BOTS / "probe"
SERVICE_HOST_PARAMETER = "_pipecatCloudServiceHost"
#: how long a call waits for its echo after speaking, at most
ECHO_WAIT = 15.0


def sessions(control: ControlPlane, agent: str) -> list[dict]:
    with control.client() as c:
        resp = c.get(f"/v1/organizations/{ORG}/services/{agent}/sessions")
    assert resp.status_code == 200, resp.text
    return resp.json()["sessions"]


def wait_sessions_ended(control: ControlPlane, agent: str, count: int) -> list[dict]:
    def ended() -> list[dict] | None:
        found = sessions(control, agent)
        done = [s for s in found if s["endedAt"] is not None and s["endState"]]
        return done if len(found) == count and len(done) == count else None

    return wait_for(ended, timeout=60, what=f"{count} sessions of {agent} to end")


async def test_every_carrier_reaches_the_bot_and_hears_it_back(
    control: ControlPlane, speech_audio: dict[str, bytes]
) -> None:
    control.deploy("echo", ECHO, autoScaling={"minAgents": 5, "maxAgents": 5})
    wait_pool(control, "echo", timeout=60, idle=5)
    host = f"echo.{ORG}"
    ws = control.process.ws_url
    calls: list[tuple[MediaStreamCall, str]] = [
        (TwilioCall(custom_parameters={SERVICE_HOST_PARAMETER: host}), f"{ws}/ws/twilio"),
        (TwilioCall(), f"{ws}/ws/twilio?serviceHost={host}"),
        (TelnyxCall(), f"{ws}/ws/telnyx?serviceHost={host}"),
        (PlivoCall(), f"{ws}/ws/plivo?serviceHost={host}"),
        (ExotelCall(), f"{ws}/ws/exotel?serviceHost={host}"),
    ]
    await asyncio.gather(
        *(
            call.play(
                url,
                frames=frames_for(call, speech_audio),
                tail=ECHO_WAIT,
                until_echo=MIN_ECHO_SHARE,
            )
            for call, url in calls
        )
    )
    sent = len(speech_audio["mu-law"]) / 8000
    for call, _ in calls:
        assert_heard_back(call, sent)

    ended = wait_sessions_ended(control, "echo", len(calls))
    assert sorted(s["transport"] for s in ended) == [
        "exotel",
        "plivo",
        "telnyx",
        "twilio",
        "twilio",
    ]
    assert {s["endState"] for s in ended} == {"completed"}, ended
    assert all(s["botStartSeconds"] is not None for s in ended), ended
    wait_pool(control, "echo", timeout=60, idle=5, busy=0)  # every instance was released


async def test_a_call_to_a_full_agent_is_refused_and_recorded(control: ControlPlane) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 1, "maxAgents": 1})
    key = control.public_key()
    busy = start_session(control, key, "probe", {"action": "forever"})
    ws = control.process.ws_url

    code, reason = await TwilioCall().refused(f"{ws}/ws/twilio?serviceHost=probe.{ORG}")
    assert code == 1013, (code, reason)
    assert reason.startswith("PCC-AGENT-AT-CAPACITY"), reason
    # Twilio's way of naming the agent is read from its start message, then refused the same.
    call = TwilioCall(custom_parameters={SERVICE_HOST_PARAMETER: f"probe.{ORG}"})
    assert (await call.refused(f"{ws}/ws/twilio"))[0] == 1013

    found = sessions(control, "probe")
    refusals = [s for s in found if s["sessionId"] != busy]
    assert len(refusals) == 2, found
    for session in refusals:
        assert session["endState"] == "ended_before_agent_start", session
        assert session["transport"] == "twilio" and session["endedAt"], session

    # Unknown agents and carriers are refused too, and hold nothing.
    assert (await TelnyxCall().refused(f"{ws}/ws/telnyx?serviceHost=nope.{ORG}"))[0] == 4404
    assert (await TelnyxCall().refused(f"{ws}/ws/telnyx?serviceHost=probe.nope"))[0] == 4404
    assert (await TelnyxCall().refused(f"{ws}/ws/vonage?serviceHost=probe.{ORG}"))[0] == 4404
    assert (await PlivoCall().refused(f"{ws}/ws/plivo?serviceHost=no-dot"))[0] == 4400

    stop_session(control, "probe", busy)
    assert wait_ended(control, "probe", busy)["endState"] == "terminated"
    wait_pool(control, "probe", idle=1, busy=0)


@pytest.fixture
def token_control(tmp_path: Path, control_env: dict[str, str]) -> Iterator[ControlPlane]:
    """A control plane whose carriers' WebSockets want a token (``CATTERY_WS_AUTH=token``)."""
    with running_control(tmp_path, **control_env, CATTERY_WS_AUTH="token") as control:
        yield control


def telephony_start(control: ControlPlane, key: str, carrier: str, agent: str) -> dict:
    resp = start(control, key, agent, transport=carrier)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_ws_auth_tokens_let_one_call_in_and_refuse_the_rest(
    token_control: ControlPlane, speech_audio: dict[str, bytes]
) -> None:
    control = token_control
    control.deploy("echo", ECHO, autoScaling={"minAgents": 1, "maxAgents": 2})
    wait_pool(control, "echo", timeout=60, idle=1)  # warm: a cold start would eat the call
    key = control.public_key()
    ws = control.process.ws_url
    host = f"echo.{ORG}"

    started = telephony_start(control, key, "twilio", "echo")
    assert set(started) == {"wsUrl", "token"}, started
    assert started["wsUrl"] == f"{ws}/ws/twilio?serviceHost={host}"
    token = started["token"]

    # No token, a forged one, one with its signature changed: 4003, before any instance.
    assert (await TwilioCall().refused(started["wsUrl"]))[0] == 4003
    forged = "eyJzaCI6ImVjaG8uZGVmYXVsdCJ9.c2lnbmF0dXJl"
    assert (await TwilioCall().refused(f"{started['wsUrl']}&token={forged}"))[0] == 4003
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await TwilioCall().refused(f"{ws}/ws/twilio/{tampered}"))[0] == 4003
    assert sessions(control, "echo") == []

    # The real one, in the path as Twilio needs it (its Stream URL takes no query): the token
    # names the agent too. The call is heard back.
    call = TwilioCall()
    frames = frames_for(call, speech_audio)[:50]  # one second is enough here
    url = f"{ws}/ws/twilio/{token}"
    await call.play(url, frames=frames, tail=ECHO_WAIT, until_echo=MIN_ECHO_SHARE)
    assert_heard_back(call, 1.0)

    # Used once: a replay is refused, in the path, the query or the header.
    assert (await TwilioCall().refused(f"{ws}/ws/twilio/{token}"))[0] == 4003
    assert (await TwilioCall().refused(f"{started['wsUrl']}&token={token}"))[0] == 4003
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await TwilioCall().refused(started["wsUrl"], headers=bearer))[0] == 4003

    # A token is for one agent and for carriers' routes only.
    other = telephony_start(control, key, "plivo", "echo")["token"]
    assert (await PlivoCall().refused(f"{ws}/ws/plivo/{other}?serviceHost=else.{ORG}"))[0] == 4003
    generic = start(control, key, "echo", transport="websocket").json()["token"]
    assert (await TelnyxCall().refused(f"{ws}/ws/telnyx/{generic}"))[0] == 4003

    [session] = wait_sessions_ended(control, "echo", 1)
    assert session["transport"] == "twilio" and session["endState"] == "completed", session


def test_telephony_start_refusals(control: ControlPlane) -> None:
    key = control.public_key()
    refused(start(control, key, "nobody", transport="twilio"), 404)
    with httpx.Client(base_url=control.url, timeout=30) as c:
        assert c.post("/v1/public/nobody/start", json={"transport": "twilio"}).status_code == 401
