"""``[pcc-observability]`` lines: written by the runtime, read back into a session's record."""

from __future__ import annotations

from cattery import latency_lines
from cattery.control.latency import collect, latency_metrics, summary
from cattery.store.models import SessionLatency

SID = "5a0f3c1e-2b7d-4c8e-9f10-112233445566"
PREFIX = f"2026-01-01 10:00:00.000 | INFO     | observers:x:1 | {SID} - "


def test_every_line_the_runtime_writes_parses_back() -> None:
    lines = [
        latency_lines.startup_timing(1700000000.5, 0.1234, [{"name": "P#0", "offset": 0.0}]),
        latency_lines.transport_timing(1700000000.5, None, 0.25),
        latency_lines.transport_timing(1700000000.5, 0.5, 0.75),
        latency_lines.user_bot_latency(0.812),
        latency_lines.first_bot_speech(1.5),
        latency_lines.latency_breakdown(None, ["a | b=1s"]),
    ]
    parsed = [latency_lines.parse(PREFIX + line) for line in lines]
    assert parsed[0] == latency_lines.Observation(
        latency_lines.STARTUP_TIMING, {"start_time": 1700000000.5, "total": 0.123}
    )
    assert parsed[1].fields == {"start_time": 1700000000.5, "client_connected": 0.25}
    assert parsed[2].fields["bot_connected"] == 0.5
    assert parsed[3] == latency_lines.Observation(
        latency_lines.USER_BOT_LATENCY, {"latency": 0.812}
    )
    assert parsed[4].kind == latency_lines.FIRST_BOT_SPEECH
    assert parsed[5].kind == latency_lines.LATENCY_BREAKDOWN and parsed[5].fields == {}
    assert latency_lines.parse(PREFIX + "Starting bot session") is None


def test_collect_keeps_the_first_startup_figures_and_every_latency() -> None:
    lines = [
        (SID, PREFIX + latency_lines.startup_timing(1.0, 0.2, [])),
        (SID, PREFIX + latency_lines.startup_timing(2.0, 0.9, [])),  # a second pipeline
        (SID, PREFIX + latency_lines.user_bot_latency(0.3)),
        (SID, PREFIX + latency_lines.user_bot_latency(0.5)),
        (None, latency_lines.user_bot_latency(9.0)),  # no session: nobody's
        ("other", "plain line"),
    ]
    updates = collect(lines)
    assert set(updates) == {SID}
    assert updates[SID].pipeline_startup_seconds == 0.2
    assert updates[SID].user_bot_latencies == [0.3, 0.5]


def test_summary_and_metrics() -> None:
    assert summary([]) == {"count": 0, "p50": None, "p95": None, "max": None}
    assert summary([0.4]) == {"count": 1, "p50": 0.4, "p95": 0.4, "max": 0.4}
    got = summary([0.1, 0.2, 0.3, 0.4, 1.0])
    assert got["count"] == 5 and got["p50"] == 0.3 and got["max"] == 1.0
    assert 0.4 < got["p95"] < 1.0
    empty = latency_metrics(None)
    assert empty["pipelineStartupSeconds"] is None and empty["userBotLatencies"] == []
    row = SessionLatency(
        session_id=SID,
        pipeline_startup_seconds=0.1,
        transport_connected_seconds=0.2,
        first_bot_speech_seconds=0.3,
        user_bot_latencies=[0.5],
    )
    assert latency_metrics(row)["userBotLatencySeconds"]["max"] == 0.5
