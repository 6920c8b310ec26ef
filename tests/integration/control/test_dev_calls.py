"""`cattery dev`: phone calls as Pipecat's runner takes them, and every transport of `/start`.

The tests play the carrier: they post its call webhook to ``POST /``, read the media
stream's URL from the XML answer (``wss://{--proxy}/ws``), connect to that path on
loopback in the carrier's protocol, speak, and hear the multi-transport bot's echo. The
dev agent's ``/ws`` tells the carrier by its first messages. ``POST /start`` answers a
``websocket`` or a carrier's start as ``/v1/public/{agent}/start`` does.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from urllib.parse import urlparse
from xml.etree import ElementTree

import httpx
import pytest
import websockets

from tests.integration.control.helpers import (
    dev_start,
    dev_status,
    get_session,
    list_sessions,
    refused,
    wait_ended,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import CATTERY, EXAMPLES, REPO, TEST_BOTS, base_env
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

AGENT = "multi-transport"
PROBE = TEST_BOTS / "probe"
PUBLIC_HOST = "bot.example.test"
#: how long a call waits for its echo after speaking, at most
ECHO_WAIT = 15.0
CALLS: dict[str, type[MediaStreamCall]] = {
    "twilio": TwilioCall,
    "telnyx": TelnyxCall,
    "plivo": PlivoCall,
}
#: what a carrier posts to a number's call webhook (form fields; cattery reads none)
WEBHOOK_FORM = {"CallSid": "CA0123", "From": "+15550100", "To": "+15550199"}


def call_webhook(dev: ControlPlane) -> httpx.Response:
    """``POST /`` as a carrier posts a number's incoming call."""
    return httpx.post(dev.url + "/", data=WEBHOOK_FORM, timeout=30)


def stream_of(xml: str) -> ElementTree.Element:
    """The ``<Stream>`` of a webhook's XML answer (TwiML, TeXML or Plivo XML)."""
    root = ElementTree.fromstring(xml)
    assert root.tag == "Response", xml
    streams = root.findall("./Connect/Stream") + root.findall("./Stream")
    assert len(streams) == 1, xml
    return streams[0]


def on_loopback(dev: ControlPlane, public_url: str) -> str:
    """The public ``wss://`` URL's path on the dev server, where the proxy would forward it."""
    parsed = urlparse(public_url)
    assert (parsed.scheme, parsed.hostname) == ("wss", PUBLIC_HOST), public_url
    return dev.process.ws_url + parsed.path


def ended_sessions(dev: ControlPlane, count: int) -> list[dict]:
    def ended() -> list[dict] | None:
        found = list_sessions(dev, AGENT)
        done = [s for s in found if s["endState"]]
        return done if len(found) == count and len(done) == count else None

    return wait_for(ended, timeout=60, what=f"{count} sessions to end")


@pytest.mark.parametrize("carrier", sorted(CALLS))
async def test_a_carriers_webhook_streams_its_call_to_the_bot(
    start_dev, speech_audio: dict[str, bytes], carrier: str
) -> None:
    """``-t CARRIER --proxy HOST``: the webhook's XML points at ``wss://HOST/ws``; the call
    placed there (``/ws/{token}`` under ``CATTERY_WS_AUTH=token``, for Plivo) is echoed."""
    env = {"CATTERY_WS_AUTH": "token"} if carrier == "plivo" else {}
    dev = start_dev("-t", carrier, "--proxy", f"https://{PUBLIC_HOST}/", **env)
    assert f"media stream wss://{PUBLIC_HOST}/ws" in dev.process.logs()

    answer = call_webhook(dev)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/xml")
    stream = stream_of(answer.text)
    if carrier == "plivo":
        url = stream.text or ""
        assert stream.get("bidirectional") == "true", answer.text
        assert stream.get("contentType") == "audio/x-mulaw;rate=8000", answer.text
        token = url.rsplit("/", 1)[-1]
        assert url == f"wss://{PUBLIC_HOST}/ws/{token}" and "." in token, url
    else:
        url = stream.get("url") or ""
        assert url == f"wss://{PUBLIC_HOST}/ws", answer.text
        expected_mode = "rtp" if carrier == "telnyx" else None
        assert stream.get("bidirectionalMode") == expected_mode, answer.text

    call = CALLS[carrier]()
    frames = frames_for(call, speech_audio)
    await call.play(on_loopback(dev, url), frames=frames, tail=ECHO_WAIT, until_echo=MIN_ECHO_SHARE)
    assert_heard_back(call, len(speech_audio["mu-law"]) / 8000)
    (session,) = ended_sessions(dev, 1)
    assert session["transport"] == carrier and session["endState"] == "completed", session

    if carrier == "plivo":  # the webhook's token opened one call; without one, none
        for path in (f"/ws/{token}", "/ws"):
            code, _ = await PlivoCall().refused(dev.process.ws_url + path)
            assert code == 4003, path
    if carrier == "twilio":  # -t also makes it the only transport /start takes, and its default
        assert dev_status(dev)["transports"] == ["twilio"]
        started = dev_start(dev, {})
        assert started.status_code == 200, started.text
        assert set(started.json()) == {"wsUrl", "token"}, started.json()
        refused(dev_start(dev, {"transport": "webrtc"}), 400)
    assert len(list_sessions(dev, AGENT)) == 1


async def test_dev_ws_takes_any_carrier_and_the_webhook_says_what_it_needs(
    start_dev, speech_audio: dict[str, bytes]
) -> None:
    dev = start_dev()
    body = refused(call_webhook(dev), 400, "NO_CALL_WEBHOOK")
    assert "-t twilio|telnyx|plivo" in body["error"], body

    # No -t: each carrier is told by its first messages, and recorded as itself. The public
    # /ws/{carrier} routes stay as they are next to /ws/{token}.
    ws = dev.process.ws_url
    calls = [
        (ExotelCall(), f"{ws}/ws"),
        (TelnyxCall(), f"{ws}/ws"),
        (TwilioCall(), f"{ws}/ws/twilio?serviceHost={AGENT}.{ORG}"),
    ]
    for call, url in calls:
        frames = frames_for(call, speech_audio)[:50]
        await call.play(url, frames=frames, tail=ECHO_WAIT, until_echo=MIN_ECHO_SHARE)
        assert_heard_back(call, 1.0)
    ended = ended_sessions(dev, 3)
    assert sorted(s["transport"] for s in ended) == ["exotel", "telnyx", "twilio"], ended
    assert {s["endState"] for s in ended} == {"completed"}, ended


def test_a_webhook_carrier_needs_a_proxy(tmp_path: Path) -> None:
    args = [*CATTERY, "dev", str(EXAMPLES / "multi-transport"), "--state-dir", str(tmp_path)]
    for extra, said in ((["-t", "twilio"], "needs --proxy"), (["-t", "vonage"], "use one of")):
        done = subprocess.run(
            [*args, *extra], capture_output=True, text=True, env=base_env(), cwd=REPO, timeout=60
        )
        assert done.returncode != 0 and said in done.stderr, done.stderr


async def test_dev_start_answers_websocket_and_carrier_starts_as_the_public_api(
    start_dev, tmp_path: Path
) -> None:
    dev = start_dev(bot=PROBE)
    report = tmp_path / "report.json"
    body = {"action": "report", "report_to": str(report)}

    started = dev_start(dev, {"transport": "websocket", "body": body})
    assert started.status_code == 200, started.text
    answer = started.json()
    assert set(answer) == {"sessionId", "wsUrl", "token", "body"}, answer
    assert answer["wsUrl"] == f"{dev.process.ws_url}/ws/generic/probe.{ORG}"
    assert json.loads(base64.b64decode(answer["body"])) == body
    url = f"{answer['wsUrl']}?token={answer['token']}&body={answer['body']}"
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()  # the probe reports and returns: its close comes through
    got = wait_for(lambda: report.exists() and json.loads(report.read_text()), what="report")
    assert got["has_websocket"] and got["body"] == body, got
    assert got["transport_type"] == "websocket", got
    assert got["ENV"] == "local", got  # as Pipecat's runner sets it
    assert got["session_id"] == answer["sessionId"]
    assert wait_ended(dev, "probe", answer["sessionId"])["endState"] == "completed"
    assert get_session(dev, "probe", answer["sessionId"])["transport"] == "websocket"

    for carrier in ("twilio", "exotel"):
        resp = dev_start(dev, {"transport": carrier})
        assert resp.status_code == 200, resp.text
        assert resp.json()["wsUrl"] == f"{dev.process.ws_url}/ws/{carrier}?serviceHost=probe.{ORG}"
    too_big = {"transport": "websocket", "body": {"pad": "x" * 5000}}
    refused(dev_start(dev, too_big), 413)
    assert len(list_sessions(dev, "probe")) == 1  # a websocket start holds nothing till used
