"""A test bot whose behaviour is chosen by its session body.

{"action": "report", "report_to": PATH}  write what bot() received to PATH, then return
{"action": "sleep", "seconds": N}        return after N seconds
{"action": "forever"}                    never return on its own
{"action": "until", "path": PATH}        return once PATH exists
{"action": "crash"}                      raise
Any action may add "report_to" to record its arguments first, or "log_env": true to log
its PROBE_* variables (where a test can't read a file the bot writes, as in a container).
"""

import asyncio
import json
import os
from pathlib import Path

from loguru import logger
from pipecat.runner.types import (
    DailyRunnerArguments,
    RunnerArguments,
    SmallWebRTCRunnerArguments,
    WebSocketRunnerArguments,
)
from pipecatcloud.agent import (
    DailySessionArguments,
    PipecatSessionArguments,
    SmallWebRTCSessionArguments,
    WebSocketSessionArguments,
)

CLASSES = {
    "RunnerArguments": RunnerArguments,
    "DailyRunnerArguments": DailyRunnerArguments,
    "WebSocketRunnerArguments": WebSocketRunnerArguments,
    "SmallWebRTCRunnerArguments": SmallWebRTCRunnerArguments,
    "PipecatSessionArguments": PipecatSessionArguments,
    "DailySessionArguments": DailySessionArguments,
    "WebSocketSessionArguments": WebSocketSessionArguments,
    "SmallWebRTCSessionArguments": SmallWebRTCSessionArguments,
}
calls = 0


def _report(runner_args, path: str) -> None:
    record = {
        "type": type(runner_args).__name__,
        "isinstance": [name for name, cls in CLASSES.items() if isinstance(runner_args, cls)],
        "session_id": runner_args.session_id,
        "body": runner_args.body,
        "room_url": getattr(runner_args, "room_url", None),
        "token": getattr(runner_args, "token", None),
        "has_websocket": getattr(runner_args, "websocket", None) is not None,
        "transport_type": getattr(runner_args, "transport_type", None),
        "module_calls": calls,
        "env": {k: v for k, v in os.environ.items() if k.startswith("PROBE_")},
        "ENV": os.environ.get("ENV"),
        "node": os.environ.get("CATTERY_NODE_ADDRESS"),
        "pid": os.getpid(),
    }
    with open(path, "w") as f:
        json.dump(record, f)


async def bot(runner_args) -> None:
    global calls
    calls += 1
    body = runner_args.body if isinstance(runner_args.body, dict) else {}
    logger.info(f"probe bot action {body.get('action')!r}")
    if body.get("report_to"):
        _report(runner_args, body["report_to"])
    if body.get("log_env"):
        probe_env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("PROBE_")}
        logger.info(f"probe env {json.dumps(probe_env)}")
    action = body.get("action", "report")
    if action == "sleep":
        await asyncio.sleep(float(body.get("seconds", 1)))
    elif action == "forever":
        await asyncio.Event().wait()
    elif action == "until":
        # Another process makes the file: there is nothing to await but the file system.
        while not Path(body["path"]).exists():  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.05)
    elif action == "crash":
        raise RuntimeError("probe bot crashed on purpose")
    logger.info("probe bot done")
