"""Benchmark bot: records the moment ``bot()`` is entered, then holds the session if asked.

Body: ``{"stamp": PATH}`` writes ``{"entered": time.time(), "pid": ..., "token": ...}`` to
PATH (atomically); ``"hold": SECONDS`` keeps the session open that long, or until
``POST /end``. ``GET /ping`` is a Session API route for the proxy benchmark.
"""

import asyncio
import json
import os
import time

from pipecatcloud_system import app

_ended: asyncio.Event | None = None


@app.get("/ping")
async def ping() -> dict:
    return {"pong": True}


@app.post("/end")
async def end() -> dict:
    if _ended is not None:
        _ended.set()
    return {}


def _write(path: str, record: dict) -> None:
    with open(f"{path}.tmp", "w") as f:
        json.dump(record, f)
    os.rename(f"{path}.tmp", path)


async def bot(runner_args) -> None:
    global _ended
    entered = time.time()
    body = runner_args.body if isinstance(runner_args.body, dict) else {}
    stamp = body.get("stamp")
    if stamp:
        record = {
            "entered": entered,
            "pid": os.getpid(),
            "token": os.environ.get("CATTERY_INSTANCE_TOKEN"),
            "node": os.environ.get("CATTERY_NODE_ADDRESS"),  # on a cluster: its node
        }
        _write(stamp, record)
    hold = float(body.get("hold", 0))
    if hold > 0:
        _ended = asyncio.Event()
        try:
            await asyncio.wait_for(_ended.wait(), hold)
        except TimeoutError:
            pass
