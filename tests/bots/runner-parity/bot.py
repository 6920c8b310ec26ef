"""A bot written as Pipecat's examples are, recording what it gets instead of talking.

As in the examples: ``load_dotenv(override=True)`` at import, ``create_transport`` with
``transport_params`` for webrtc, twilio and websocket, and an ``ENV != "local"`` branch for
Krisp. ``bot()`` writes its runner arguments' type and fields, and the environment values it
sees, to ``$PARITY_RECORDS/<transport>.json`` (the folder's ``.env`` names the folder), so
a test can compare the same bot under Pipecat's runner (``python bot.py -t ...``),
``cattery serve`` and ``cattery dev``.
"""

import json
import os
from pathlib import Path

from dotenv import load_dotenv
from pipecat.runner.types import (
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)
from pipecat.runner.utils import create_transport
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams

load_dotenv(override=True)

SEEN_AT_IMPORT = os.getenv("PARITY_DOTENV")
RUNNER_TYPES = {
    "RunnerArguments": RunnerArguments,
    "DailyRunnerArguments": DailyRunnerArguments,
    "SmallWebRTCRunnerArguments": SmallWebRTCRunnerArguments,
    "WebSocketRunnerArguments": WebSocketRunnerArguments,
}

transport_params = {
    "webrtc": lambda: TransportParams(audio_in_enabled=True, audio_out_enabled=True),
    "twilio": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
    "websocket": lambda: FastAPIWebsocketParams(audio_in_enabled=True, audio_out_enabled=True),
}


def krisp() -> str:
    """Pipecat Cloud's examples: ``KrispVivaFilter()`` unless ``ENV`` is ``local``."""
    if os.getenv("ENV") == "local":
        return "skipped"
    try:
        from pipecat.audio.filters.krisp_viva_filter import KrispVivaFilter  # noqa: F401
    except Exception as exc:
        return f"unavailable: {type(exc).__name__}"
    return "available"


async def bot(runner_args):
    transport = await create_transport(runner_args, transport_params)
    call_data = runner_args.call_data
    record = {
        "classes": [n for n, c in RUNNER_TYPES.items() if isinstance(runner_args, c)],
        "transport": type(transport).__name__,
        "transport_type": getattr(runner_args, "transport_type", None),
        "call_data": call_data.model_dump(by_alias=True) if call_data is not None else None,
        "body": runner_args.body,
        "has_session_id": bool(runner_args.session_id),
        "handle_sigint": runner_args.handle_sigint,
        "handle_sigterm": runner_args.handle_sigterm,
        "pipeline_idle_timeout_secs": runner_args.pipeline_idle_timeout_secs,
        "file_storage": type(runner_args.file_storage).__name__,
        "has_cli_args": runner_args.cli_args is not None,
        "env": {
            "ENV": os.getenv("ENV"),
            "PARITY_DOTENV": os.getenv("PARITY_DOTENV"),
            "seen_at_import": SEEN_AT_IMPORT,
        },
        "krisp": krisp(),
    }
    name = "webrtc" if isinstance(runner_args, SmallWebRTCRunnerArguments) else "ws"
    out = Path(os.environ["PARITY_RECORDS"]) / f"{name}-{record['transport_type']}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.rename(out)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
