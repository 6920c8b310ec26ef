"""WebRTC through the public API: start with a public key, offer through the Session API.

The same multi-transport bot `cattery dev` serves answers a session started by
``POST /v1/public/{agent}/start`` with ``transport: "webrtc"``; a real Chromium on the
control plane's origin offers its microphone to ``/v1/public/{agent}/sessions/{id}/api/offer``
and hears the echo. Runs only inside the loopback-only network namespace ./scripts/test
makes (as tests/integration/runtime/test_webrtc.py); the refusals run everywhere.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.integration.control.helpers import (
    SESSION_NOT_READY,
    add_organization,
    get_session,
    refused,
    start,
    stop_session,
    wait_ended,
)
from tests.support.control import ControlPlane
from tests.support.processes import EXAMPLES
from tests.support.webrtc_client import offer_to_session, wait_for_echo, webrtc_page

ECHO = EXAMPLES / "multi-transport"


def start_webrtc(control: ControlPlane, key: str, agent: str, **request: object) -> dict:
    resp = start(control, key, agent, {"caller": "browser"}, transport="webrtc", **request)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.mark.browser
async def test_public_start_and_session_api_offer_hear_the_echo(
    control: ControlPlane, webrtc_browser
) -> None:
    control.deploy("echo", ECHO, autoScaling={"minAgents": 1})
    key = control.public_key()
    started = start_webrtc(control, key, "echo")
    session_id = started["sessionId"]
    assert started == {"sessionId": session_id, "iceConfig": {"iceServers": []}}

    async with webrtc_page(control.url + "/healthz") as page:  # same origin as the API
        answer = await offer_to_session(page, "echo", key, started)
        patched = await page.evaluate("(pcId) => catteryWebRTC.trickle(pcId)", answer["pcId"])
        assert patched == {"status": 200, "body": {"status": "success"}}
        stats = await wait_for_echo(page)
        assert stats["connectionState"] == "connected"
        assert stats["playback"] == "playing"
        assert get_session(control, "echo", session_id)["endedAt"] is None
    session = wait_ended(control, "echo", session_id)
    assert session["endState"] == "completed"
    assert session["transport"] == "webrtc"


def test_webrtc_start_and_offer_refusals(control: ControlPlane) -> None:
    """The ICE servers a start hands out, and offers that never reach the session."""
    control.deploy("echo", ECHO, autoScaling={"minAgents": 1})
    key = control.public_key()
    plain = start_webrtc(control, key, "echo")
    assert plain["iceConfig"] == {"iceServers": []}
    # The tests' control plane is configured with no ICE servers at all (no public STUN).
    asked = start_webrtc(control, key, "echo", enableDefaultIceServers=True)
    assert asked["iceConfig"] == {"iceServers": []}

    offer_path = f"/v1/public/echo/sessions/{plain['sessionId']}/api/offer"
    offer = {"sdp": "v=0", "type": "offer"}
    refused(httpx.post(control.url + offer_path, json=offer, timeout=30), 401)
    other = add_organization(control, "other")
    with control.client(other.public_key) as c:
        assert refused(c.post(offer_path, json=offer), 404)["error"] == SESSION_NOT_READY
    with control.client(key) as c:
        nobody = f"/v1/public/echo/sessions/{uuid.uuid4()}/api/offer"
        assert refused(c.post(nobody, json=offer), 404)["error"] == SESSION_NOT_READY
        # An offer that reaches the instance is judged there; the session waits on.
        assert "no media" in refused(c.post(offer_path, json=offer), 400)["error"]
    assert get_session(control, "echo", plain["sessionId"])["endedAt"] is None
    for started in (plain, asked):
        stop_session(control, "echo", started["sessionId"])
        assert wait_ended(control, "echo", started["sessionId"])["endState"] == "terminated"
