"""A bot written like Pipecat's examples behaves on cattery as under Pipecat's own runner.

The bot (``tests/bots/runner-parity``) builds its transport with ``create_transport`` for
``webrtc``, ``twilio`` and ``websocket``, loads its folder's ``.env`` with
``load_dotenv(override=True)`` at import, and takes the ``ENV != "local"`` Krisp branch of
Pipecat Cloud's examples; ``bot()`` records its runner arguments' type and fields and the
environment it sees. Each transport's session is run once under ``python bot.py -t ...``
(Pipecat's development runner, a subprocess on loopback): those records are the reference.
Then one server per way cattery runs it (``cattery serve`` forked, ``cattery serve`` with
plain processes, ``cattery dev``) runs the same three sessions, and each record must equal
the runner's. Two differences are by design: ``cli_args`` (the runner's own argparse
namespace; Pipecat Cloud gives none), and under ``cattery serve`` ``ENV`` is unset, as on
Pipecat Cloud, so its bots take the Krisp branch (``krisp_audio`` is not installed here).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.integration.control.helpers import put_secrets, running_control, wait_pool
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS, base_env
from tests.support.telephony import TwilioCall
from tests.support.waiting import async_wait_for, wait_for

BOT = TEST_BOTS / "runner-parity"
AGENT = "parity"
BODY = {"greeting": "parity"}
TRANSPORTS = ("webrtc", "twilio", "websocket")
RECORD_NAMES = {"webrtc": "webrtc-None", "twilio": "ws-twilio", "websocket": "ws-websocket"}


def parity_folder(root: Path) -> Path:
    """The bot in a folder of its own, with a ``.env`` naming where it records."""
    folder = root / AGENT
    records = root / "records"
    folder.mkdir(parents=True)
    records.mkdir()
    records.chmod(0o1777)  # bots run as unprivileged users under a root control plane
    shutil.copy(BOT / "bot.py", folder / "bot.py")
    (folder / ".env").write_text(
        f"PARITY_RECORDS={records}\nPARITY_DOTENV=from-dotenv\n"
        # Pipecat's Twilio serializer hangs up through Twilio's API: its example's .env
        "TWILIO_ACCOUNT_SID=ACparity\nTWILIO_AUTH_TOKEN=parity-token\n"
    )
    return folder


async def take_record(folder: Path, transport: str) -> dict[str, Any]:
    path = folder.parent / "records" / f"{RECORD_NAMES[transport]}.json"

    async def written() -> dict[str, Any] | None:
        return json.loads(path.read_text()) if path.exists() else None

    record = await async_wait_for(written, timeout=30, what=path.name)
    path.unlink()
    return record


@dataclass
class Place:
    """Where a session starts: Pipecat's runner, ``cattery dev`` (the same routes), or the
    public API of ``cattery serve``."""

    url: str
    start_path: str
    session_prefix: str
    twilio_path: str
    key: str | None = None

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        resp = httpx.post(self.url + path, json=payload, headers=headers, timeout=60)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def ws(self, url_or_path: str) -> str:
        """A WebSocket URL on this place's own address (the runner answers ``localhost``)."""
        path = url_or_path.split("://", 1)[-1].partition("/")[2]
        return self.url.replace("http", "ws", 1) + "/" + path


async def webrtc_session(place: Place, folder: Path) -> dict[str, Any]:
    started = place.post(place.start_path, {"transport": "webrtc", "body": BODY})
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        place.post(f"{place.session_prefix}/{started['sessionId']}/api/offer", offer)
        return await take_record(folder, "webrtc")
    finally:
        await pc.close()


async def twilio_session(place: Place, folder: Path) -> dict[str, Any]:
    call = TwilioCall(stream_sid="MZparity", call_sid="CAparity", custom_parameters=BODY)
    async with websockets.connect(place.ws(place.twilio_path)) as ws:
        for message in call.start_messages():
            await ws.send(message)
        return await take_record(folder, "twilio")


async def websocket_session(place: Place, folder: Path) -> dict[str, Any]:
    started = place.post(place.start_path, {"transport": "websocket"})
    url = place.ws(started["wsUrl"])
    if started.get("token"):
        url += f"?token={started['token']}"
    async with websockets.connect(url):
        return await take_record(folder, "websocket")


SESSIONS: dict[str, Callable[[Place, Path], Awaitable[dict[str, Any]]]] = {
    "webrtc": webrtc_session,
    "twilio": twilio_session,
    "websocket": websocket_session,
}


async def records_at(place: Place, folder: Path) -> dict[str, dict[str, Any]]:
    return {transport: await SESSIONS[transport](place, folder) for transport in TRANSPORTS}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runner_records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The reference: each transport's session under ``python bot.py -t TRANSPORT``."""
    import asyncio

    root = tmp_path_factory.mktemp("runner")
    folder = parity_folder(root)
    records: dict[str, dict[str, Any]] = {}
    for transport in TRANSPORTS:
        port = free_port()
        args = [sys.executable, "bot.py", "-t", transport, "--host", "127.0.0.1"]
        args += ["--port", str(port)]
        if transport == "twilio":
            args += ["--proxy", "parity.example"]
        env = base_env(PARITY_DOTENV="from-shell")
        with (root / f"runner-{transport}.log").open("ab") as log:
            proc = subprocess.Popen(args, cwd=folder, env=env, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda u=url: _answers(u + "/status"), timeout=60, what="the runner")
            place = Place(url, "/start", "/sessions", "/ws")
            records[transport] = asyncio.run(SESSIONS[transport](place, folder))
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    return records


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what differs by design: the runner's own ``cli_args``."""
    return {k: v for k, v in record.items() if k != "has_cli_args"}


def as_on_pipecat_cloud(record: dict[str, Any]) -> dict[str, Any]:
    """The runner's record as ``cattery serve`` should give it: no ``ENV=local``, so the
    Krisp branch is taken (and fails to import ``krisp_audio``, as anywhere without it)."""
    return {
        **comparable(record),
        "env": {**record["env"], "ENV": None},
        "krisp": "unavailable: ImportError",
    }


def test_the_runner_records_what_pipecat_gives(runner_records: dict[str, dict]) -> None:
    """The reference is what the runner is known to give, so the comparisons mean something."""
    webrtc, twilio, ws = (runner_records[t] for t in TRANSPORTS)
    assert "SmallWebRTCRunnerArguments" in webrtc["classes"] and webrtc["body"] == BODY
    assert twilio["transport_type"] == "twilio" and twilio["call_data"]["call_id"] == "CAparity"
    assert ws["transport_type"] == "websocket" and ws["transport"] == "FastAPIWebsocketTransport"
    for record in (webrtc, twilio, ws):
        assert record["env"] == {
            "ENV": "local",
            "PARITY_DOTENV": "from-dotenv",
            "seen_at_import": "from-dotenv",
        }
        assert record["krisp"] == "skipped" and record["has_cli_args"]


@pytest.fixture
def parity_serve(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Place]:
    folder = parity_folder(tmp_path / "bot")
    env = {"CATTERY_BACKEND_FORK": "1" if request.param == "forked" else "0"}
    with running_control(tmp_path, **env) as control:
        # A deployment value the folder's .env overrides at import, forked or not.
        put_secrets(control, "parity-secrets", PARITY_DOTENV="from-secret-set")
        control.deploy(AGENT, folder, secretSet="parity-secrets", autoScaling={"minAgents": 1})
        wait_pool(control, AGENT, timeout=60, idle=1)
        place = Place(
            control.url,
            f"/v1/public/{AGENT}/start",
            f"/v1/public/{AGENT}/sessions",
            f"/ws/twilio?serviceHost={AGENT}.{ORG}",
            key=control.public_key(),
        )
        place.folder = folder  # type: ignore[attr-defined]
        with control.client() as c:
            details = c.get(f"/v1/organizations/{ORG}/services/{AGENT}").json()["body"]
        forked = request.param == "forked"
        assert details["processes"]["forked"] is forked, details
        assert ("CATTERY_BACKEND_FORK=0" in details["currentRevision"]["phase"]) is not forked
        yield place


@pytest.mark.parametrize("parity_serve", ["forked", "plain"], indirect=True)
async def test_cattery_serve_gives_the_bot_what_the_runner_gives(
    parity_serve: Place, runner_records: dict[str, dict]
) -> None:
    got = await records_at(parity_serve, parity_serve.folder)  # type: ignore[attr-defined]
    for transport in TRANSPORTS:
        assert comparable(got[transport]) == as_on_pipecat_cloud(runner_records[transport]), (
            transport
        )


async def test_cattery_dev_gives_the_bot_what_the_runner_gives(
    start_dev: Callable[..., ControlPlane], tmp_path: Path, runner_records: dict[str, dict]
) -> None:
    folder = parity_folder(tmp_path / "bot")
    dev = start_dev(bot=folder)
    place = Place(dev.url, "/start", "/sessions", "/ws")
    got = await records_at(place, folder)
    for transport in TRANSPORTS:
        assert comparable(got[transport]) == comparable(runner_records[transport]), transport
