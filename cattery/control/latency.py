"""Reading a session's ``[pcc-observability]`` lines into its latency record.

The instance logs them (``cattery.runtime.observers``); the log router hands every line to
the store in batches, and each batch's observations are merged into the session's record
in the same transaction as the lines themselves.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from cattery import latency_lines
from cattery.store.repositories.latency import LatencyUpdate


def collect(lines: Iterable[tuple[str | None, str]]) -> dict[str, LatencyUpdate]:
    """The latency updates in ``(session_id, line)`` pairs, by session."""
    updates: dict[str, LatencyUpdate] = {}
    for session_id, line in lines:
        if session_id is None:
            continue
        found = latency_lines.parse(line)
        if found is None:
            continue
        update = updates.setdefault(session_id, LatencyUpdate())
        _merge(update, found)
    return {sid: u for sid, u in updates.items() if _has_any(u)}


def _merge(update: LatencyUpdate, found: latency_lines.Observation) -> None:
    fields = found.fields
    if found.kind == latency_lines.STARTUP_TIMING and "total" in fields:
        if update.pipeline_startup_seconds is None:
            update.pipeline_startup_seconds = fields["total"]
    elif found.kind == latency_lines.TRANSPORT_TIMING:
        connected = fields.get("client_connected", fields.get("bot_connected"))
        if connected is not None and update.transport_connected_seconds is None:
            update.transport_connected_seconds = connected
    elif found.kind == latency_lines.FIRST_BOT_SPEECH and "latency" in fields:
        if update.first_bot_speech_seconds is None:
            update.first_bot_speech_seconds = fields["latency"]
    elif found.kind == latency_lines.USER_BOT_LATENCY and "latency" in fields:
        update.user_bot_latencies.append(fields["latency"])


def _has_any(update: LatencyUpdate) -> bool:
    return bool(
        update.user_bot_latencies
        or update.pipeline_startup_seconds is not None
        or update.transport_connected_seconds is not None
        or update.first_bot_speech_seconds is not None
    )


def _quantile(values: Sequence[float], q: int) -> float:
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[q - 1])


def summary(latencies: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p95 and max of user-to-bot latencies (None without any)."""
    values = [float(v) for v in latencies]
    return {
        "count": len(values),
        "p50": _quantile(values, 50) if values else None,
        "p95": _quantile(values, 95) if values else None,
        "max": max(values) if values else None,
    }


def latency_metrics(row: Any | None) -> dict[str, Any]:
    """The ``latencyMetrics`` of a session's detail: startup timing and user-to-bot latency
    in seconds; None (and a count of 0) for what its instance never logged."""
    latencies = list(row.user_bot_latencies or []) if row is not None else []
    return {
        "pipelineStartupSeconds": row.pipeline_startup_seconds if row is not None else None,
        "transportConnectedSeconds": row.transport_connected_seconds if row is not None else None,
        "firstBotSpeechSeconds": row.first_bot_speech_seconds if row is not None else None,
        "userBotLatencySeconds": summary(latencies),
        "userBotLatencies": latencies,
    }
