"""A test bot for Daily PSTN dial-in: parses its body as Pipecat's ``DailyDialinRequest``.

It never joins the room: it writes what it received to the file ``DIALIN_REPORT`` names (an
environment variable, from the agent's secret set) and returns.
"""

import json
import os

from pipecat.runner.types import DailyDialinRequest
from pydantic import ValidationError


async def bot(runner_args) -> None:
    record = {
        "type": type(runner_args).__name__,
        "session_id": runner_args.session_id,
        "room_url": getattr(runner_args, "room_url", None),
        "token": getattr(runner_args, "token", None),
    }
    try:
        request = DailyDialinRequest.model_validate(runner_args.body)
    except ValidationError as exc:
        record.update(parsed=False, error=str(exc), body=runner_args.body)
    else:
        record.update(parsed=True, request=request.model_dump())
    _write(record)


def _write(record: dict) -> None:
    with open(os.environ["DIALIN_REPORT"], "w") as f:
        json.dump(record, f)
