"""The user's bot: logs what it got and a variable from its secrets, then waits a while."""

import asyncio
import os

from loguru import logger


async def bot(args) -> None:
    logger.info(f"pipecat-base-like bot got {args.body} as {type(args).__name__}")
    logger.info(f"pipecat-base-like bot sees PROBE_SECRET={os.environ.get('PROBE_SECRET')}")
    await asyncio.sleep(float(args.body.get("seconds", 0)))
