"""Background tasks with one owner: started through it, cancelled and awaited by its ``aclose``.

An exception in an owned task is logged when the task ends, never lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from loguru import logger

T = TypeVar("T")


class OwnedTasks:
    """A set of tasks belonging to one component (named by ``owner`` in the logs)."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run ``coro`` as an owned task; ``name`` should end in ``_task``."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._owner} is closed; cannot start {name}")
        task = asyncio.create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.opt(exception=exc).error(f"Background task {task.get_name()} failed: {exc!r}")

    async def aclose(self) -> None:
        """Cancel every task and wait for all of them to end. Idempotent."""
        self._closed = True
        await cancel_and_wait(self._tasks)

    async def wait_all(self) -> None:
        """Wait for the running tasks to end on their own (new ones started meanwhile too)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))


async def cancel_and_wait(tasks: set[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for them, even if the caller is cancelled meanwhile."""
    current = asyncio.current_task()
    pending = {t for t in tasks if not t.done() and t is not current}
    for task in pending:
        task.cancel()
    if not pending:
        return
    cancelled = False
    while pending:
        try:
            _, pending = await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True  # finish the cleanup first, then honour the cancellation
    if cancelled and current is not None:
        raise asyncio.CancelledError
