"""Calls to instances on a worker node, through the control plane on the head's machine:
a Twilio call through ``/ws/twilio`` and a WebRTC session offered through the Session API
both hear their echo."""

from __future__ import annotations

import pytest

from tests.integration.control.helpers import start, wait_ended, wait_pool
from tests.support.control import ORG, ControlPlane
from tests.support.processes import EXAMPLES
from tests.support.telephony import (
    MIN_ECHO_SHARE,
    TwilioCall,
    assert_heard_back,
    frames_for,
    missing_speech_tools,
)
from tests.support.telephony import speech_audio as make_speech_audio
from tests.support.webrtc_client import offer_to_session, wait_for_echo, webrtc_page

ECHO = EXAMPLES / "multi-transport"
ECHO_WAIT = 15.0


@pytest.fixture(scope="module")
def echo_agent(cluster_control: ControlPlane):
    """The multi-transport echo bot, two warm instances on the workers."""
    cluster_control.deploy("echo", ECHO, autoScaling={"minAgents": 2, "maxAgents": 4})
    wait_pool(cluster_control, "echo", timeout=120, idle=2)
    yield "echo"
    with cluster_control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/echo").status_code == 200


async def test_a_twilio_call_to_a_worker_node_hears_its_echo(
    cluster_control: ControlPlane, echo_agent: str
) -> None:
    missing = missing_speech_tools()
    if missing:
        pytest.skip(f"making speech audio needs {' and '.join(missing)}, not installed")
    audio = make_speech_audio()
    call = TwilioCall()
    url = f"{cluster_control.process.ws_url}/ws/twilio?serviceHost={echo_agent}.{ORG}"
    await call.play(url, frames=frames_for(call, audio), tail=ECHO_WAIT, until_echo=MIN_ECHO_SHARE)
    assert_heard_back(call, len(audio["mu-law"]) / 8000)


@pytest.mark.browser
async def test_a_webrtc_session_on_a_worker_node_hears_its_echo(
    webrtc_browser, cluster_control: ControlPlane, echo_agent: str
) -> None:
    control = cluster_control
    key = control.public_key()
    resp = start(control, key, echo_agent, {"caller": "browser"}, transport="webrtc")
    assert resp.status_code == 200, resp.text
    started = resp.json()
    async with webrtc_page(control.url + "/healthz") as page:  # same origin as the API
        await offer_to_session(page, echo_agent, key, started)
        stats = await wait_for_echo(page)
        assert stats["connectionState"] == "connected"
    assert wait_ended(control, echo_agent, started["sessionId"])["endState"] == "completed"
