"""Startup timing and user-to-bot latency for every pipeline, as Pipecat Cloud logs them.

Pipecat runs ``setup_pipeline_worker(worker)`` from each file named in
``PIPECAT_SETUP_FILES`` while a pipeline sets up. This file is one: it adds Pipecat's
``StartupTimingObserver`` and ``UserBotLatencyObserver`` to the pipeline and logs what
they report as ``[pcc-observability]`` lines, which the control plane reads back into the
session record. ``install`` names this file in the environment, so every pipeline a bot
builds gets the observers without the bot changing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loguru import logger

from cattery import latency_lines

SETUP_FILES_ENV = "PIPECAT_SETUP_FILES"


def install() -> None:
    """Add this file to ``PIPECAT_SETUP_FILES`` (once), keeping any the bot's owner set."""
    here = str(Path(__file__).resolve())
    current = [f for f in os.environ.get(SETUP_FILES_ENV, "").split(os.pathsep) if f]
    if here not in current:
        os.environ[SETUP_FILES_ENV] = os.pathsep.join([*current, here])


async def setup_pipeline_worker(worker: Any) -> None:
    """Pipecat's hook: add both observers to ``worker``; a Pipecat without one skips it."""
    _add_startup_timing(worker)
    _add_user_bot_latency(worker)


#: the name Pipecat before 1.4 looks for
setup_pipeline_task = setup_pipeline_worker


async def setup_worker_runner(runner: Any) -> None:
    """Pipecat's other hook: a runner needs nothing from this file."""


def _add_startup_timing(worker: Any) -> None:
    try:
        from pipecat.observers.startup_timing_observer import StartupTimingObserver
    except ImportError:
        return
    observer = StartupTimingObserver()

    @observer.event_handler("on_startup_timing_report")
    async def on_startup_timing_report(_observer: Any, report: Any) -> None:
        processors = [
            {
                "name": t.processor_name,
                "offset": round(t.start_offset_secs, 3),
                "duration": round(t.duration_secs, 3),
            }
            for t in report.processor_timings
        ]
        logger.info(
            latency_lines.startup_timing(report.start_time, report.total_duration_secs, processors)
        )

    @observer.event_handler("on_transport_timing_report")
    async def on_transport_timing_report(_observer: Any, report: Any) -> None:
        logger.info(
            latency_lines.transport_timing(
                report.start_time, report.bot_connected_secs, report.client_connected_secs
            )
        )

    worker.add_observer(observer)


def _add_user_bot_latency(worker: Any) -> None:
    try:
        from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
    except ImportError:
        return
    observer = UserBotLatencyObserver()

    @observer.event_handler("on_latency_measured")
    async def on_latency_measured(_observer: Any, seconds: float) -> None:
        logger.info(latency_lines.user_bot_latency(seconds))

    @observer.event_handler("on_first_bot_speech_latency")
    async def on_first_bot_speech_latency(_observer: Any, seconds: float) -> None:
        logger.info(latency_lines.first_bot_speech(seconds))

    @observer.event_handler("on_latency_breakdown")
    async def on_latency_breakdown(_observer: Any, breakdown: Any) -> None:
        lines = getattr(breakdown, "turn_contribution_lines", None)
        events = lines() if callable(lines) else []
        logger.info(latency_lines.latency_breakdown(breakdown.user_turn_start_time, events))

    worker.add_observer(observer)
