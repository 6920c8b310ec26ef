"""A test bot that imports fine until a file named BROKEN appears beside it."""

from pathlib import Path

if (Path(__file__).parent / "BROKEN").exists():
    raise RuntimeError("breakable bot: broken on purpose")


async def bot(runner_args) -> None:
    return None
