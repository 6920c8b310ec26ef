"""Driving ``webrtc_client.js`` in Chromium: a SmallWebRTC peer on the runtime's own origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.support.browser import chromium_context
from tests.support.processes import ServerProcess
from tests.support.waiting import async_wait_for

CLIENT_JS = Path(__file__).with_name("webrtc_client.js")
AUDIO_TIMEOUT = 30.0
# An offer aiortc parses but refuses: a media section without ICE credentials.
NO_ICE_CREDENTIALS = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
)


async def client_page(context: Any, url: str, page: Any = None) -> Any:
    """A page at ``url`` with the client, so its requests are same-origin with that server
    (a runtime's ``/livez``, a control plane's ``/healthz``)."""
    page = page or await context.new_page()
    await page.goto(url)
    await page.add_script_tag(content=CLIENT_JS.read_text())
    return page


def runtime_url(rt: ServerProcess) -> str:
    """A page on a runtime's origin, for ``client_page`` and ``webrtc_page``."""
    return rt.url + "/livez"


@asynccontextmanager
async def webrtc_page(url: str) -> AsyncIterator[Any]:
    """A fresh Chromium with one client page at ``url``; its peer connection is closed on
    exit."""
    async with chromium_context() as context:
        page = await client_page(context, url, context.pages[0] if context.pages else None)
        try:
            yield page
        finally:
            await page.evaluate("catteryWebRTC.close()")


async def connect(page: Any, **options: Any) -> dict[str, Any]:
    """Offer the fake microphone (``headers``, ``requestData``); ``{pcId, candidates}``."""
    return await page.evaluate("(options) => catteryWebRTC.connect(options)", options)


async def offer_to_session(page: Any, agent: str, key: str, started: dict) -> dict[str, Any]:
    """Offer the fake microphone through the Session API to a session that
    ``POST /v1/public/{agent}/start`` answered with ``started``, with the ICE servers it
    handed out; the answer, checked to carry a peer connection id and candidates."""
    answer = await connect(
        page,
        url=f"/v1/public/{agent}/sessions/{started['sessionId']}/api/offer",
        headers={"Authorization": f"Bearer {key}"},
        iceServers=started["iceConfig"]["iceServers"],
    )
    assert answer["pcId"] and answer["candidates"], answer
    return answer


async def inbound_audio(page: Any) -> dict[str, Any]:
    return await page.evaluate("catteryWebRTC.inboundAudio()")


async def wait_for_echo(page: Any, timeout: float = AUDIO_TIMEOUT) -> dict[str, Any]:
    """Wait until the remote audio track delivers sound, then until it delivers more."""

    async def sounding() -> dict[str, Any] | None:
        stats = await inbound_audio(page)
        if stats["found"] and stats["bytesReceived"] > 0 and stats["totalAudioEnergy"] > 0:
            return stats
        return None

    first = await async_wait_for(sounding, timeout=timeout, what="audio from the bot")

    async def growing() -> dict[str, Any] | None:
        stats = await inbound_audio(page)
        grew = (
            stats["bytesReceived"] > first["bytesReceived"]
            and stats["totalAudioEnergy"] > first["totalAudioEnergy"]
        )
        return stats if grew else None

    return await async_wait_for(growing, timeout=timeout, what="the bot's audio to keep coming")
