"""A test bot that floods its log: ``{"mb": N}`` prints N MB of 100-character lines as fast
as it can, then returns (the session ends completed)."""

import sys

LINE = "flood " + "x" * 93 + "\n"


async def bot(runner_args) -> None:
    body = runner_args.body if isinstance(runner_args.body, dict) else {}
    lines = int(float(body.get("mb", 1)) * 1024 * 1024) // len(LINE)
    block = LINE * 1000
    for _ in range(lines // 1000):
        sys.stdout.write(block)
    sys.stdout.flush()
