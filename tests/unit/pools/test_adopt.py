"""Busy instances reattached after a restart, handed to the pool manager before or after
their agent's pool exists."""

from __future__ import annotations

from cattery.backends.base import InstanceSpec, InstanceStatus
from cattery.pools import PoolManager, PoolOptions
from tests.support.fake_backend import FakeBackend, FakeHandle
from tests.support.waiting import async_wait_for

SPEC = InstanceSpec(agent_key="org/agent", deployment_id="d1", image="/bots/agent")


async def closed(handle: FakeHandle) -> None:
    async def check() -> bool:
        return handle.closed

    await async_wait_for(check, timeout=10, interval=0.01, what=f"{handle.id} closed")


def adopted() -> FakeHandle:
    handle = FakeHandle(SPEC)
    handle._status = InstanceStatus.READY  # a running instance found again
    return handle


async def test_an_instance_adopted_before_its_pool_counts_against_the_cap() -> None:
    backend = FakeBackend()
    manager = PoolManager(backend)
    first, second = adopted(), adopted()
    manager.adopt_busy("org/agent", first)
    manager.adopt_busy("org/agent", second)

    pool = await manager.ensure("org/agent", SPEC, PoolOptions(min_agents=1, max_agents=2))
    assert pool.stats().busy == 2
    assert not backend.handles  # the cap is reached: no warm instance yet

    await manager.release("org/agent", first)
    assert pool.stats().busy == 1
    await closed(first)
    await manager.aclose()
    assert second.closed


async def test_an_instance_adopted_after_its_pool_exists() -> None:
    manager = PoolManager(FakeBackend())
    pool = await manager.ensure("org/agent", SPEC, PoolOptions(min_agents=0))
    handle = adopted()
    manager.adopt_busy("org/agent", handle)
    assert pool.stats().busy == 1
    await manager.release("org/agent", handle)
    assert pool.stats().busy == 0
    await closed(handle)
    await manager.aclose()


async def test_an_instance_released_before_its_pool_exists_is_closed() -> None:
    manager = PoolManager(FakeBackend())
    handle = adopted()
    manager.adopt_busy("org/gone", handle)  # an agent deleted meanwhile: never a pool
    await manager.release("org/gone", handle)
    assert handle.closed
    pool = await manager.ensure("org/gone", SPEC, PoolOptions(min_agents=0))
    assert pool.stats().busy == 0  # not handed to a pool made later
    await manager.aclose()


async def test_closing_the_manager_closes_instances_waiting_for_a_pool() -> None:
    manager = PoolManager(FakeBackend())
    handle = adopted()
    manager.adopt_busy("org/agent", handle)
    await manager.aclose()
    assert handle.closed
