"""A start at capacity may wait for an instance: a fair queue, bounded by each budget."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from cattery.backends.base import InstanceSpec
from cattery.control.sessions import acquire_waiting
from cattery.errors import AtCapacity, CallerGone
from cattery.pools import Pool, PoolOptions
from cattery.pools.options import Lease
from tests.support.fake_backend import FakeBackend
from tests.support.waiting import async_wait_for

SPEC = InstanceSpec(agent_key="org/agent", deployment_id="d1", image="/bots/agent")


async def until(check: Callable[[], object], what: str) -> None:
    async def condition() -> bool:
        return bool(check())

    await async_wait_for(condition, timeout=10, interval=0.01, what=what)


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    """``maxAgents`` 1, one instance warm."""
    backend = FakeBackend()
    pool = Pool("org/agent", SPEC, PoolOptions(min_agents=1, max_agents=1), backend)  # type: ignore[arg-type]
    await pool.start()
    await until(lambda: pool.stats().idle == 1, "the warm instance")
    yield pool
    await pool.aclose()
    assert not backend.open, "the pool left instances open"


def waiting(pool: Pool, seconds: float) -> asyncio.Task[Lease]:
    return asyncio.ensure_future(pool.acquire(wait=seconds))


async def test_a_start_within_its_budget_gets_the_instance_that_frees(pool: Pool) -> None:
    busy = await pool.acquire()
    waiter = waiting(pool, 30)
    await until(lambda: pool.stats().waiting == 1, "the start to queue")

    await pool.release(busy.handle)  # the session ends

    lease = await waiter
    assert lease.handle is not busy.handle
    assert pool.stats().waiting == 0 and pool.stats().busy == 1


async def test_a_start_whose_budget_ends_is_refused(pool: Pool) -> None:
    await pool.acquire()
    with pytest.raises(AtCapacity):
        await pool.acquire(wait=0.05)
    assert pool.stats().waiting == 0


async def test_waiters_are_served_in_arrival_order(pool: Pool) -> None:
    current = await pool.acquire()
    waiters = []
    for n in range(5):
        waiters.append(waiting(pool, 30))
        await until(lambda n=n: pool.stats().waiting == n + 1, f"waiter {n} to queue")

    served: list[asyncio.Task[Lease]] = []
    for _ in waiters:
        await pool.release(current.handle)  # one session ends: one waiter is served
        left = [t for t in waiters if t not in served]
        done, _ = await asyncio.wait(left, return_when=asyncio.FIRST_COMPLETED)
        (task,) = done
        served.append(task)
        current = task.result()

    assert served == waiters


async def test_a_waiter_that_leaves_is_not_served(pool: Pool) -> None:
    busy = await pool.acquire()
    gone = asyncio.Event()
    leaving = asyncio.ensure_future(acquire_waiting(pool, 30, gone.wait))
    staying = asyncio.ensure_future(acquire_waiting(pool, 30, asyncio.Event().wait))
    await until(lambda: pool.stats().waiting == 2, "both starts to queue")

    gone.set()  # its caller closed the connection
    with pytest.raises(CallerGone):
        await leaving
    assert pool.stats().waiting == 1

    await pool.release(busy.handle)
    assert (await staying).handle is not busy.handle


async def test_a_start_without_a_budget_never_jumps_the_queue(pool: Pool) -> None:
    busy = await pool.acquire()
    waiter = waiting(pool, 30)
    await until(lambda: pool.stats().waiting == 1, "the start to queue")

    await pool.release(busy.handle)
    with pytest.raises(AtCapacity):  # room is the waiter's, however early this start is
        await pool.acquire()

    await waiter


async def test_waiters_see_the_pool_close(pool: Pool) -> None:
    await pool.acquire()
    waiter = waiting(pool, 30)
    await until(lambda: pool.stats().waiting == 1, "the start to queue")

    await pool.aclose()

    with pytest.raises(Exception, match="shutting down"):
        await waiter
