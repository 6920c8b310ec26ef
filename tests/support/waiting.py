"""Deadline-bounded polling: tests wait for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], *, timeout: float = 15.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the condition may raise until it holds
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}: {last_exc!r}")


async def async_wait_for(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "",
) -> T:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except Exception as exc:
            last_exc = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or check}: {last_exc!r}")


async def until(check: Callable[[], object], what: str, timeout: float = 30) -> None:
    """Wait until the plain (not awaitable) ``check`` returns something truthy."""

    async def condition() -> bool:
        return bool(check())

    await async_wait_for(condition, timeout=timeout, what=what)
