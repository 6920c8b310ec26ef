"""Owned background tasks: an exception in one is logged, never lost; closing cancels and
waits for every one, and nothing starts on a closed owner."""

from __future__ import annotations

import asyncio

import pytest
from loguru import logger

from cattery.tasks import OwnedTasks
from tests.support.waiting import async_wait_for


async def test_a_failing_task_s_exception_is_logged_with_its_owner() -> None:
    tasks = OwnedTasks("recorder")
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(m), level="ERROR", format="{message}\n{exception}")
    try:

        async def broken() -> None:
            raise RuntimeError("the store went away")

        task = tasks.spawn(broken(), "sync_task")
        await asyncio.gather(task, return_exceptions=True)
        await async_wait_for(  # the done callback runs after the task's waiters
            lambda: _async(logged), timeout=5, interval=0.01, what="the logged failure"
        )
    finally:
        logger.remove(sink)
    assert len(logged) == 1, logged
    assert "recorder:sync_task" in logged[0] and "the store went away" in logged[0]
    assert "Traceback" in logged[0]  # with where it happened
    assert not tasks  # forgotten once done
    await tasks.aclose()


async def test_closing_cancels_and_waits_for_every_task() -> None:
    tasks = OwnedTasks("sessions")
    cleaned: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # its cleanup still runs to the end
            cleaned.append(name)

    for name in ("a", "b"):
        tasks.spawn(forever(name), f"{name}_task")
    await asyncio.sleep(0)

    await tasks.aclose()

    assert sorted(cleaned) == ["a", "b"]
    assert not tasks and tasks.closed
    with pytest.raises(RuntimeError, match="closed"):
        tasks.spawn(forever("late"), "late_task")
    await tasks.aclose()  # idempotent


async def test_waiting_for_all_includes_tasks_started_meanwhile() -> None:
    tasks = OwnedTasks("deployer")
    done: list[str] = []

    async def second() -> None:
        done.append("second")

    async def first() -> None:
        tasks.spawn(second(), "second_task")
        done.append("first")

    tasks.spawn(first(), "first_task")
    await tasks.wait_all()

    assert done == ["first", "second"]
    await tasks.aclose()


async def _async(value: object) -> object:
    return value
