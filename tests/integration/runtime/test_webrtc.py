"""SmallWebRTC against `cattery runtime`: a real Chromium sends its microphone and hears the echo.

The browser tests run only inside the loopback-only network namespace ./scripts/test makes,
so ICE never uses one of the machine's real interfaces; elsewhere they skip. The refusals
at the end need no peer and run everywhere.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.processes import EXAMPLES, TEST_BOTS, ServerProcess
from tests.support.waiting import async_wait_for, wait_for
from tests.support.webrtc_client import (
    AUDIO_TIMEOUT,
    NO_ICE_CREDENTIALS,
    client_page,
    connect,
    inbound_audio,
    runtime_url,
    wait_for_echo,
    webrtc_page,
)

ECHO = EXAMPLES / "multi-transport"
PROBE = TEST_BOTS / "probe"
WAIT_FOR_OFFER_BUDGET = 180.0  # /bot waits up to 120 s for the offer, then for the bot
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def start_webrtc_bot(rt: ServerProcess, session_id: str, body: dict) -> asyncio.Task:
    """``POST /bot`` for a webrtc session: held open until the offer's bot has ended."""

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(timeout=WAIT_FOR_OFFER_BUDGET) as client:
            return await client.post(
                rt.url + "/bot",
                json=body,
                headers={"x-daily-session-id": session_id, "x-daily-transport-type": "webrtc"},
            )

    return asyncio.create_task(post())


async def waiting_for_offer(rt: ServerProcess) -> None:
    async def waiting() -> bool:
        return "Waiting for the WebRTC offer" in rt.logs()

    await async_wait_for(waiting, what="/bot to wait for the offer")


def assert_session_lines_tagged(logs: str, session_id: str) -> None:
    """The bot's and Pipecat's lines during the session carry its id, the peer's included.

    Only a request refused meanwhile (the second tab's offer) may carry another id, one no
    session ever started with.
    """
    lines = logs.splitlines()
    start = next(i for i, ln in enumerate(lines) if f"| {session_id} - Starting bot session" in ln)
    end = next(i for i, ln in enumerate(lines) if f"| {session_id} - Stopping bot session" in ln)
    started = set(re.findall(rf"\| ({UUID}) - Starting bot session", logs))
    ours = re.compile(r"^\S+ \S+ \| \w+ +\| (?:bot|pipecat)[.:]\S+ \| (\S+) - ")
    tags = [(m[1], ln) for ln in lines[start : end + 1] if (m := ours.match(ln))]
    assert any(tag == session_id and "Client disconnected" in ln for tag, ln in tags)
    for tag, line in tags:
        assert tag == session_id or (re.fullmatch(UUID, tag) and tag not in started), line


@pytest.mark.browser
async def test_browser_offer_hears_the_echo_bot(start_runtime, webrtc_browser) -> None:
    rt = start_runtime(ECHO)
    async with webrtc_page(runtime_url(rt)) as page:
        answer = await connect(page)
        assert answer["pcId"]
        assert answer["candidates"], "Chromium gathered no loopback candidate"

        patched = await page.evaluate("(pcId) => catteryWebRTC.trickle(pcId)", answer["pcId"])
        assert patched == {"status": 200, "body": {"status": "success"}}

        stats = await wait_for_echo(page)
        assert stats["connectionState"] == "connected"
        assert stats["playback"] == "playing"

        # One peer per instance: a second browser tab may not take over the live session.
        other = await client_page(page.context, runtime_url(rt))
        refused = await other.evaluate(
            "catteryWebRTC.connect().then(() => 'connected', (err) => String(err))"
        )
        assert "400" in refused and "existing connection active" in refused
        await other.evaluate("catteryWebRTC.close()")
        assert (await inbound_audio(page))["connectionState"] == "connected"

        await page.evaluate("catteryWebRTC.close()")
        logs = wait_for(lambda: "Stopping bot session" in rt.logs() and rt.logs(), what="bot end")
    # An offer without x-daily-session-id still gets a session id of its own.
    match = re.search(rf"\| ({UUID}) - Starting bot session", logs)
    assert match, logs
    assert_session_lines_tagged(logs, match[1])


@pytest.mark.browser
async def test_bot_with_webrtc_transport_waits_for_the_offer(start_runtime, webrtc_browser) -> None:
    rt = start_runtime(ECHO)
    session_id = str(uuid.uuid4())
    bot = start_webrtc_bot(rt, session_id, {"caller": "browser"})
    await waiting_for_offer(rt)
    assert not bot.done()
    async with webrtc_page(runtime_url(rt)) as page:
        await connect(page, headers={"x-daily-session-id": session_id})
        await wait_for_echo(page)
        assert not bot.done(), "/bot returned while its session was running"
        await page.evaluate("catteryWebRTC.close()")
        resp = await asyncio.wait_for(bot, AUDIO_TIMEOUT)
    assert resp.status_code == 200 and resp.json() == {}
    assert resp.headers["x-cattery-end-state"] == "completed"
    assert_session_lines_tagged(rt.logs(), session_id)


@pytest.mark.browser
async def test_the_offer_gives_the_waiting_bot_its_body(
    start_runtime, webrtc_browser, tmp_path: Path
) -> None:
    rt = start_runtime(PROBE)
    session_id = str(uuid.uuid4())
    report = tmp_path / "report.json"
    body = {"action": "report", "report_to": str(report), "caller": "browser"}
    bot = start_webrtc_bot(rt, session_id, body)
    await waiting_for_offer(rt)
    async with webrtc_page(runtime_url(rt)) as page:
        await connect(page)  # no session header: the waiting /bot's id applies
        resp = await asyncio.wait_for(bot, AUDIO_TIMEOUT)
    assert resp.headers["x-cattery-end-state"] == "completed"
    got = json.loads(report.read_text())
    assert got["session_id"] == session_id
    assert got["body"] == body
    assert {"SmallWebRTCRunnerArguments", "SmallWebRTCSessionArguments"} <= set(got["isinstance"])


@pytest.mark.browser
async def test_a_session_that_ends_frees_the_instance_for_the_next_peer(
    start_runtime, webrtc_browser, tmp_path: Path
) -> None:
    """bot() returning ends its peer connection, so the single-connection slot is free again."""
    rt = start_runtime(PROBE)
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    async with webrtc_page(runtime_url(rt)) as page:
        await connect(page, requestData={"action": "report", "report_to": str(first)})
        wait_for(lambda: "Stopping bot session" in rt.logs(), what="the first session to end")
        other = await client_page(page.context, runtime_url(rt))  # the first page stays open
        await connect(other, requestData={"action": "report", "report_to": str(second)})
        got = json.loads(wait_for(second.read_text, what="the second session"))
        assert got["body"] == {"action": "report", "report_to": str(second)}
        await other.evaluate("catteryWebRTC.close()")
    assert json.loads(first.read_text())["session_id"] != got["session_id"]


def test_bad_offers_are_400s(start_runtime) -> None:
    rt = start_runtime(PROBE)
    bodies = {
        b"not json": "JSON object",
        b"[1, 2]": "JSON object",
        b"{}": "Invalid WebRTC offer",
        b'{"sdp": "v=0", "type": "offer", "surprise": 1}': "Invalid WebRTC offer",
        b'{"sdp": "this is not SDP", "type": "offer"}': "no media",
        b'{"sdp": 42, "type": "offer"}': "sdp must be a string",
        b'{"sdp": "v=0", "type": "answer"}': "type must be 'offer'",
        json.dumps({"sdp": NO_ICE_CREDENTIALS, "type": "offer"}).encode(): "ICE",
        json.dumps({"sdp": NO_ICE_CREDENTIALS, "type": "offer", "pc_id": 7}).encode(): "pc_id",
    }
    with httpx.Client(base_url=rt.url, timeout=30) as client:
        for body, problem in bodies.items():
            resp = client.post(
                "/api/offer", content=body, headers={"content-type": "application/json"}
            )
            assert resp.status_code == 400, (body, resp.text)
            assert set(resp.json()) == {"code", "error"}, body
            assert problem in resp.json()["error"], (body, resp.json())
        assert client.get("/livez").status_code == 200
    assert "Starting bot session" not in rt.logs()


def test_bad_patches_are_4xx(start_runtime) -> None:
    rt = start_runtime(PROBE)
    with httpx.Client(base_url=rt.url, timeout=30) as client:
        unknown = client.patch("/api/offer", json={"pc_id": "nobody", "candidates": []})
        assert unknown.status_code == 404
        assert set(unknown.json()) == {"code", "error"}
        for body in (
            {},
            {"pc_id": "x"},
            {"pc_id": "x", "candidates": [{"candidate": 1}]},
            [1],
        ):
            resp = client.patch("/api/offer", json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert set(resp.json()) == {"code", "error"}
