"""Voice latency per session: a Twilio call's ``[pcc-observability]`` lines, in its record.

A caller speaks to a bot with VAD and a turn (it greets, then answers each utterance) through
``/ws/twilio``; the session's ``latencyMetrics`` hold the startup timing and the user-to-bot
latencies its instance logged, number for number. An agent that names
``OBSERVABILITY_OBSERVERS`` in ``DISABLED_FEATURES`` logs none, and its record holds none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cattery import latency_lines
from tests.integration.control.helpers import (
    get_session,
    logs,
    put_secrets,
    running_control,
    wait_ended,
    wait_pool,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.telephony import FRAME_BYTES, TwilioCall, frames_of, missing_speech_tools, speech
from tests.support.waiting import wait_for

VOICE = TEST_BOTS / "voice-turn"
SILENCE = b"\xff" * FRAME_BYTES  # mu-law zero
OFF_SET = "observers-off"


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    """One control plane with two agents of the voice bot: observers on, and turned off."""
    if missing_speech_tools():
        pytest.skip(f"making speech needs {' and '.join(missing_speech_tools())}")
    with running_control(tmp_path) as control:
        put_secrets(control, OFF_SET, DISABLED_FEATURES="OBSERVABILITY_OBSERVERS")
        scaling = {"minAgents": 1, "maxAgents": 1}
        control.deploy("voice", VOICE, autoScaling=scaling)
        control.deploy("voice-off", VOICE, autoScaling=scaling, secretSet=OFF_SET)
        wait_pool(control, "voice", timeout=60, idle=1)
        wait_pool(control, "voice-off", timeout=60, idle=1)
        yield control


async def call(control: ControlPlane, agent: str) -> str:
    """Say one sentence, wait for the answer, hang up: the session's id."""
    frames = [SILENCE] * 25 + frames_of(speech("Hello, can you hear me?")) + [SILENCE] * 75
    twilio = TwilioCall()
    await twilio.play(
        f"{control.process.ws_url}/ws/twilio?serviceHost={agent}.{ORG}", frames=frames, tail=2.0
    )
    with control.client() as c:
        found = c.get(f"/v1/organizations/{ORG}/services/{agent}/sessions").json()["sessions"]
    assert len(found) >= 1, found
    return max(found, key=lambda s: s["createdAt"])["sessionId"]


def observed(control: ControlPlane, agent: str, session_id: str) -> list[latency_lines.Observation]:
    lines = [entry["log"] for entry in logs(control, agent, session_id)]
    return [o for o in map(latency_lines.parse, lines) if o is not None]


async def test_a_call_records_the_latency_its_instance_logged(control: ControlPlane) -> None:
    session_id, off_id = await asyncio.gather(call(control, "voice"), call(control, "voice-off"))
    assert wait_ended(control, "voice", session_id, timeout=60)["endState"] == "completed"

    def recorded() -> dict | None:
        metrics = get_session(control, "voice", session_id)["latencyMetrics"]
        return metrics if metrics["userBotLatencySeconds"]["count"] >= 1 else None

    metrics = wait_for(recorded, timeout=30, what="a user-to-bot latency in the record")
    lines = observed(control, "voice", session_id)
    kinds = {o.kind for o in lines}
    assert {latency_lines.STARTUP_TIMING, latency_lines.USER_BOT_LATENCY} <= kinds, kinds

    startup = next(o for o in lines if o.kind == latency_lines.STARTUP_TIMING)
    assert metrics["pipelineStartupSeconds"] == startup.fields["total"]
    latencies = [o.fields["latency"] for o in lines if o.kind == latency_lines.USER_BOT_LATENCY]
    assert metrics["userBotLatencies"] == latencies
    assert metrics["userBotLatencySeconds"]["count"] == len(latencies)
    assert metrics["userBotLatencySeconds"]["max"] == max(latencies)
    transport = [o for o in lines if o.kind == latency_lines.TRANSPORT_TIMING]
    if transport:
        fields = transport[0].fields
        connected = fields.get("client_connected", fields.get("bot_connected"))
        assert metrics["transportConnectedSeconds"] == connected
    first = [o for o in lines if o.kind == latency_lines.FIRST_BOT_SPEECH]
    if first:
        assert metrics["firstBotSpeechSeconds"] == first[0].fields["latency"]
    # The resource metrics the CLI reads are still there, beside them.
    assert "resourceMetrics" in get_session(control, "voice", session_id)

    # Turned off: the same call logs no such line, and its record holds nothing.
    assert wait_ended(control, "voice-off", off_id, timeout=60)["endState"] == "completed"
    wait_for(
        lambda: any("Caller stopped speaking" in e["log"] for e in logs(control, "voice-off")),
        timeout=30,
        what="the bot to have heard a turn",
    )
    assert observed(control, "voice-off", off_id) == []
    metrics = get_session(control, "voice-off", off_id)["latencyMetrics"]
    assert metrics["userBotLatencySeconds"]["count"] == 0
    assert metrics["pipelineStartupSeconds"] is None
    assert metrics["firstBotSpeechSeconds"] is None
