"""The ``[pcc-observability]`` log lines: written by an instance, read by its control plane.

Pipecat Cloud's base image logs a session's startup timing and user-to-bot latency in
these lines; cattery's runtime writes the same ones and its control plane reads them back
from the instance's output into the session record. Both sides use this module (standard
library only), so the format is defined once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from cattery.contract import OBSERVABILITY_MARKER

MARKER = OBSERVABILITY_MARKER

STARTUP_TIMING = "Startup timing"
TRANSPORT_TIMING = "Transport timing"
USER_BOT_LATENCY = "User-bot latency"
FIRST_BOT_SPEECH = "First bot speech"
LATENCY_BREAKDOWN = "Latency breakdown"

_LINE = re.compile(re.escape(MARKER) + r" ([A-Za-z -]+?) \| (.*)$")
_FIELD = re.compile(r"(\w+)=(-?[0-9.]+)s?")


def _seconds(value: float) -> str:
    return f"{value:.3f}s"


def startup_timing(start_time: float, total: float, processors: list[dict[str, Any]]) -> str:
    return (
        f"{MARKER} {STARTUP_TIMING} | start_time={start_time:.3f} | total={_seconds(total)}"
        f" | processors: {json.dumps(processors)}"
    )


def transport_timing(
    start_time: float, bot_connected: float | None, client_connected: float | None
) -> str:
    parts = [f"start_time={start_time:.3f}"]
    if bot_connected is not None:
        parts.append(f"bot_connected={_seconds(bot_connected)}")
    if client_connected is not None:
        parts.append(f"client_connected={_seconds(client_connected)}")
    return f"{MARKER} {TRANSPORT_TIMING} | " + " | ".join(parts)


def user_bot_latency(seconds: float) -> str:
    return f"{MARKER} {USER_BOT_LATENCY} | latency={_seconds(seconds)}"


def first_bot_speech(seconds: float) -> str:
    return f"{MARKER} {FIRST_BOT_SPEECH} | latency={_seconds(seconds)}"


def latency_breakdown(start_time: float | None, events: list[str]) -> str:
    start = f" start_time={start_time:.3f} |" if start_time is not None else ""
    return f"{MARKER} {LATENCY_BREAKDOWN} |{start} events: {json.dumps(events)}"


@dataclass(frozen=True)
class Observation:
    """One ``[pcc-observability]`` line: its kind and its numeric fields (seconds)."""

    kind: str
    fields: dict[str, float]


def parse(line: str) -> Observation | None:
    """The observation a log line carries, or None for any other line."""
    if MARKER not in line:
        return None
    match = _LINE.search(line)
    if match is None:
        return None
    kind, rest = match.group(1), match.group(2)
    head = rest.split(" | processors:", 1)[0].split(" | events:", 1)[0]
    fields = {}
    for part in head.split(" | "):
        field = _FIELD.fullmatch(part.strip())
        if field is not None:
            fields[field.group(1)] = float(field.group(2))
    return Observation(kind, fields)
