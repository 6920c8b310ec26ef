"""Waiting for a Ray call with a time limit that holds.

``asyncio.wait_for`` on a call's ``ObjectRef`` cancels the task awaiting it at the limit
and then waits for that task to end; a call to a node host that hangs (stopped, cut off)
kept that task from ending, so the wait outlived its limit for good: a heartbeat stuck
there never fenced its node, or never let it back. Awaiting the ref's future instead ends
at the limit: cancelling a future is immediate (the call itself is left to Ray).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def answer_within(ref: Any, seconds: float) -> Any:
    """The value of the Ray call ``ref``, or ``TimeoutError`` after ``seconds``."""
    return await asyncio.wait_for(asyncio.wrap_future(ref.future()), seconds)


async def within(work: Coroutine[Any, Any, T], seconds: float) -> T:
    """``work``'s result, or ``TimeoutError`` after ``seconds`` even if ``work`` does not
    end when cancelled (it is cancelled and left behind, never waited for)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        raise TimeoutError(f"no answer within {seconds:g} s")
    return task.result()
