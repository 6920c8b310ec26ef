"""`cattery dev PATH`: Pipecat's development runner's routes over the control plane.

The route tests run everywhere. The browser tests run only inside the loopback-only
network namespace ./scripts/test makes (as tests/integration/runtime/test_webrtc.py), and
block every request that would leave loopback, noting which the page tried.
"""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.integration.control.helpers import (
    SESSION_NOT_READY,
    dev_start,
    dev_status,
    get_session,
    list_sessions,
    logs,
    refused,
    start_session,
    stop_session,
    wait_ended,
)
from tests.support.browser import (
    LoopbackOnly,
    chromium_context,
    fake_microphone,
    speech_wav,
    wait_for_talk_echo,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import EXAMPLES
from tests.support.waiting import async_wait_for, wait_for
from tests.support.webrtc_client import NO_ICE_CREDENTIALS, connect, wait_for_echo, webrtc_page

AGENT = "multi-transport"  # cattery dev names the agent after the bot's folder
LOOPBACK_STUN = "stun:127.0.0.1:3478"  # nothing answers there; only ever handed out
# What the prebuilt UI's SmallWebRTC entry posts to /start (its startBotParams).
UI_START_REQUEST = {
    "createDailyRoom": False,
    "enableDefaultIceServers": True,
    "transport": "webrtc",
}


PREBUILT = "/client/prebuilt/"


def client_assets(dev: ControlPlane) -> list[str]:
    """Every file the prebuilt UI's page and its main script name under its ``assets``."""
    index = httpx.get(dev.url + PREBUILT, timeout=10).text
    named = set(re.findall(r"\./(assets/[\w.-]+)", index))
    for script in [a for a in named if a.endswith(".js")]:
        text = httpx.get(f"{dev.url}{PREBUILT}{script}", timeout=10).text
        named |= {"assets/" + a for a in re.findall(r"\./([\w.-]+\.(?:js|css|woff2))", text)}
    return sorted(named)


def small_webrtc_module(dev: ControlPlane) -> str:
    """The path of the UI's own chunk that exports Pipecat's ``SmallWebRTCTransport``."""
    for asset in client_assets(dev):
        path = f"{PREBUILT}{asset}"
        if asset.endswith(".js") and "as SmallWebRTCTransport}" in httpx.get(dev.url + path).text:
            return path
    raise AssertionError("the prebuilt UI ships no SmallWebRTCTransport chunk")


def test_dev_serves_the_bot_warm_with_the_runners_routes(start_dev) -> None:
    dev = start_dev()
    assert f"open the client:  {dev.url}/client/" in dev.process.logs()
    transports = ["webrtc", "daily", "websocket", "twilio", "telnyx", "plivo", "exotel"]
    assert dev_status(dev) == {"status": "ready", "transports": transports}
    with dev.client() as c:
        agent = c.get(f"/v1/organizations/{ORG}/services/{AGENT}").json()["body"]
    assert agent["autoScaling"]["minAgents"] == 1
    # The dev routes need no key; the APIs keep theirs.
    refused(httpx.get(dev.url + "/v1/agents"), 401)
    refused(httpx.post(f"{dev.url}/v1/public/{AGENT}/start", json={}), 401)

    with httpx.Client(base_url=dev.url, timeout=10) as c:
        assert c.get("/").headers["location"].endswith("/client/")
        assert c.get("/client").headers["location"].endswith("/client/")
        page = c.get("/client/")  # the offline client, every asset served from here
        assert page.status_code == 200 and 'id="talk"' in page.text
        assets = re.findall(r'(?:src|href)="(/dashboard/static/[^"]+)"', page.text)
        assert "/dashboard/static/talk.js" in assets, assets
        for asset in assets:
            assert c.get(asset).status_code == 200, asset
        prebuilt = c.get(PREBUILT)
        assert prebuilt.status_code == 200 and '<div id="root">' in prebuilt.text
        assets = client_assets(dev)
        assert any(a.endswith(".css") for a in assets), assets
        for asset in assets:
            assert c.get(f"{PREBUILT}{asset}").status_code == 200, asset


def test_start_answers_in_the_runners_shapes(start_dev) -> None:
    dev = start_dev(CATTERY_ICE_FALLBACK_URLS=LOOPBACK_STUN)
    for payload in (
        {"createDailyRoom": True},
        {"transport": "daily", "createDailyRoom": True},
    ):
        assert "DAILY_API_KEY" in refused(dev_start(dev, payload), 400)["error"], payload
    assert "livekit" in refused(dev_start(dev, {"transport": "livekit"}), 400)["error"]
    refused(httpx.post(dev.url + "/start", content=b"[1]", timeout=10), 400)
    assert list_sessions(dev, AGENT) == []

    # No transport: WebRTC, with no ICE servers unless the client asks for the defaults.
    plain = dev_start(dev, {"body": {"who": "dev"}})
    assert plain.status_code == 200, plain.text
    assert plain.json() == {"sessionId": plain.json()["sessionId"], "iceConfig": {"iceServers": []}}
    asked = dev_start(dev, UI_START_REQUEST)
    assert asked.status_code == 200, asked.text
    assert asked.json()["iceConfig"] == {"iceServers": [{"urls": LOOPBACK_STUN}]}

    # They are sessions like any other: recorded, listed and stopped through the API.
    for resp in (plain, asked):
        session_id = resp.json()["sessionId"]
        uuid.UUID(session_id)
        session = get_session(dev, AGENT, session_id)
        assert session["transport"] == "webrtc" and session["endedAt"] is None
        stop_session(dev, AGENT, session_id)
        assert wait_ended(dev, AGENT, session_id)["endState"] == "terminated"


def test_session_and_offer_routes_refuse_what_they_cannot_route(start_dev) -> None:
    dev = start_dev()
    with httpx.Client(base_url=dev.url, timeout=60) as c:
        nobody = str(uuid.uuid4())
        assert refused(c.get(f"/sessions/{nobody}/api/offer"), 404)["error"] == SESSION_NOT_READY
        refused(c.patch("/api/offer", json={"pc_id": "nobody", "candidates": []}), 404)
        refused(c.patch("/api/offer", json={"candidates": []}), 400)
        for body in (b"not json", b"[1]", b'{"sdp": "v=0", "type": "answer"}', b"{}"):
            refused(c.post("/api/offer", content=body), 400)
        assert list_sessions(dev, AGENT) == []

        # An offer the instance refuses ends the session it started: no other offer will come.
        resp = c.post("/api/offer", json={"sdp": NO_ICE_CREDENTIALS, "type": "offer"})
        assert "Invalid WebRTC offer" in refused(resp, 400)["error"]
        (session,) = list_sessions(dev, AGENT)
        assert wait_ended(dev, AGENT, session["sessionId"])["endState"] == "terminated"

    # Sessions of other agents stay behind their key.
    dev.deploy("chat", EXAMPLES / "session-routes")
    key = dev.public_key()
    session_id = start_session(dev, key, "chat", {"name": "Ada"})
    with dev.client(key) as c:
        wait_for(
            lambda: c.get(f"/v1/public/chat/sessions/{session_id}/messages").status_code == 200,
            what="the chat session",
        )
    resp = httpx.get(f"{dev.url}/sessions/{session_id}/messages", timeout=10)
    assert refused(resp, 404)["error"] == SESSION_NOT_READY
    stop_session(dev, "chat", session_id)


# --- in a browser -------------------------------------------------------------------------

# Wraps RTCPeerConnection before any page script runs: records each peer connection with its
# configuration, and plays what it receives (Chromium decodes audio only for a sink).
PEER_CONNECTION_SPY = """
(() => {
  const Original = window.RTCPeerConnection;
  window.catteryPeers = [];
  window.RTCPeerConnection = function (config, ...rest) {
    const pc = new Original(config, ...rest);
    window.catteryPeers.push({ pc, iceServers: (config && config.iceServers) || [] });
    pc.addEventListener("track", (event) => {
      if (event.track.kind !== "audio") return;
      const audio = document.createElement("audio");
      audio.srcObject = new MediaStream([event.track]);
      document.body.appendChild(audio);
      audio.play().catch(() => {});
    });
    return pc;
  };
  window.RTCPeerConnection.prototype = Original.prototype;
})();
"""

PEER_AUDIO = """
async () => {
  const peers = [];
  for (const { pc, iceServers } of window.catteryPeers) {
    const peer = { connectionState: pc.connectionState, iceServers, found: false };
    (await pc.getStats()).forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") {
        Object.assign(peer, {
          found: true,
          bytesReceived: report.bytesReceived || 0,
          totalAudioEnergy: report.totalAudioEnergy || 0,
        });
      }
    });
    peers.push(peer);
  }
  return peers;
}
"""

# Pipecat's SmallWebRTCTransport from the UI's own chunk, with a media manager that hands it
# the (fake) microphone instead of Daily's, driven as the UI's client drives it: POST /start
# with the UI's request, ICE servers from the answer, then connect, which offers to
# /sessions/{sessionId}/api/offer and trickles candidates there.
DRIVE_UI_TRANSPORT = """
async ({ moduleUrl, requestData }) => {
  const { SmallWebRTCTransport } = await import(moduleUrl);
  let mic = null;
  const media = {
    setClientOptions() {},
    async initialize() {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      mic = stream.getAudioTracks()[0];
    },
    async connect() {},
    async disconnect() {
      if (mic) mic.stop();
    },
    tracks() {
      return { local: { audio: mic }, bot: {} };
    },
    isMicEnabled: true,
    isCamEnabled: false,
    isSharingScreen: false,
    supportsScreenShare: false,
    async getAllMics() { return []; },
    async getAllCams() { return []; },
    async getAllSpeakers() { return []; },
    selectedMic: {},
    selectedCam: {},
    selectedSpeaker: {},
    updateMic() {},
    updateCam() {},
    updateSpeaker() {},
    enableMic() {},
    enableCam() {},
    enableScreenShare() {},
  };
  const transport = new SmallWebRTCTransport({ waitForICEGathering: true, mediaManager: media });
  const states = [];
  transport.initialize(
    { callbacks: { onTransportStateChanged: (s) => states.push(s) }, enableMic: true },
    () => {},
  );
  transport.startBotParams = { endpoint: "/start", requestData };
  await transport.initDevices();
  const resp = await fetch("/start", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(requestData),
  });
  const started = await resp.json();
  if (!resp.ok) throw new Error(`/start answered ${resp.status}: ${JSON.stringify(started)}`);
  if (started.iceConfig) transport.iceServers = started.iceConfig.iceServers;
  await transport.connect(started);
  window.catteryTransport = transport;
  return { started, states };
}
"""


async def dev_page(context: Any, dev: ControlPlane) -> tuple[Any, LoopbackOnly, list[str]]:
    """The prebuilt UI's page and what it sent, off loopback and to loopback."""
    outside = LoopbackOnly()
    await context.route("**/*", outside)
    await context.add_init_script(PEER_CONNECTION_SPY)
    page = context.pages[0] if context.pages else await context.new_page()
    sent: list[str] = []
    page.on("request", lambda request: sent.append(f"{request.method} {request.url}"))
    failed: list[str] = []
    page.on(
        "response",
        lambda response: failed.append(response.url) if response.status >= 400 else None,
    )
    await page.goto(dev.url + PREBUILT)
    await page.wait_for_selector("[data-slot=connect-button]")
    assert failed == [], f"the UI's page could not load {failed}"
    return page, outside, sent


async def wait_for_ui_echo(page: Any) -> dict[str, Any]:
    """The page's one peer connection receives audio, and keeps receiving more."""

    async def sounding() -> dict[str, Any] | None:
        peers = await page.evaluate(PEER_AUDIO)
        if len(peers) == 1 and peers[0]["found"] and peers[0]["totalAudioEnergy"] > 0:
            return peers[0]
        return None

    first = await async_wait_for(sounding, timeout=30, what="audio from the bot")

    async def growing() -> dict[str, Any] | None:
        peer = (await page.evaluate(PEER_AUDIO))[0]
        more = peer["totalAudioEnergy"] > first["totalAudioEnergy"]
        return peer if more and peer["bytesReceived"] > first["bytesReceived"] else None

    return await async_wait_for(growing, timeout=30, what="the bot's audio to keep coming")


@pytest.mark.browser
async def test_client_talks_offline(start_dev, webrtc_browser, tmp_path) -> None:
    """Acceptance through ``/client/`` as a user clicks it: the fake microphone speaks, the
    echo comes back and has energy, and nothing was asked of anything beyond loopback."""
    dev = start_dev()
    wav = speech_wav("Hello cattery, can you hear me?", tmp_path)
    async with chromium_context(extra_args=fake_microphone(wav)) as context:
        outside = LoopbackOnly()
        await context.route("**/*", outside)
        page = context.pages[0] if context.pages else await context.new_page()
        failed: list[str] = []
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
        await page.goto(dev.url + "/client/")
        await page.click("#talk-start")
        talk = await wait_for_talk_echo(page)
        assert talk["state"] == "connected"
        await page.click("#talk-stop")
        assert failed == [] and outside.blocked == [], (failed, outside.blocked)
    session = get_session(dev, AGENT, talk["sessionId"])
    assert session["transport"] == "webrtc"
    assert wait_ended(dev, AGENT, talk["sessionId"])["endState"] == "completed"


@pytest.mark.browser
async def test_prebuilt_ui_transport_hears_the_echo(start_dev, webrtc_browser) -> None:
    """Acceptance 1 with the UI's own client transport, on the UI's page, served locally."""
    dev = start_dev()
    module = small_webrtc_module(dev)
    async with chromium_context() as context:
        page, outside, sent = await dev_page(context, dev)
        done = await page.evaluate(
            DRIVE_UI_TRANSPORT, {"moduleUrl": module, "requestData": UI_START_REQUEST}
        )
        session_id = done["started"]["sessionId"]
        assert done["started"] == {"sessionId": session_id, "iceConfig": {"iceServers": []}}
        assert done["states"][-1] == "connected", done["states"]
        peer = await wait_for_ui_echo(page)
        assert peer["connectionState"] == "connected" and peer["iceServers"] == []

        offers = [s for s in sent if s.endswith(f"/sessions/{session_id}/api/offer")]
        assert any(s.startswith("POST ") for s in offers), sent
        assert get_session(dev, AGENT, session_id)["transport"] == "webrtc"
        await page.evaluate("window.catteryTransport.disconnect()")
        # Only the UI's own device setup (Daily's bundle, error reports) looked outside.
        for url in outside.blocked:
            assert urlparse(url).hostname.endswith(("daily.co", "sentry.io")), outside.blocked
    assert wait_ended(dev, AGENT, session_id)["endState"] == "completed"


@pytest.mark.browser
async def test_offer_without_a_session_starts_one(start_dev, webrtc_browser) -> None:
    """``POST /api/offer`` as the runner takes it; candidates follow on ``PATCH`` by pc_id."""
    dev = start_dev()
    async with webrtc_page(dev.url + "/status") as page:
        answer = await connect(page, requestData={"from": "api/offer"})
        patched = await page.evaluate("(pcId) => catteryWebRTC.trickle(pcId)", answer["pcId"])
        assert patched == {"status": 200, "body": {"status": "success"}}
        stats = await wait_for_echo(page)
        assert stats["connectionState"] == "connected"
        (session,) = list_sessions(dev, AGENT)
        assert session["transport"] == "webrtc" and session["endedAt"] is None
    assert wait_ended(dev, AGENT, session["sessionId"])["endState"] == "completed"
    lines = [line["log"] for line in logs(dev, AGENT, session["sessionId"])]
    assert any("Client disconnected" in line for line in lines), lines
