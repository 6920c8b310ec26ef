"""Pool logic on the in-memory backend: warm and cold acquires, the cap, refill, cooldown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from cattery.backends.base import InstanceFailed, InstanceHandle, InstanceSpec, InstanceStatus
from cattery.backends.regions import NoNodeInRegion
from cattery.errors import AtCapacity, ServiceUnavailable
from cattery.pools import Pool, PoolManager, PoolOptions
from tests.support.fake_backend import FakeBackend
from tests.support.waiting import async_wait_for

SPEC = InstanceSpec(agent_key="org/agent", deployment_id="d1", image="/bots/agent")
SPEC_2 = InstanceSpec(agent_key="org/agent", deployment_id="d2", image="/bots/agent")

MakePool = Callable[..., Pool]


async def until(check: Callable[[], object], what: str) -> None:
    async def condition() -> bool:
        return bool(check())

    await async_wait_for(condition, timeout=10, interval=0.01, what=what)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
async def make_pool(backend: FakeBackend) -> AsyncIterator[MakePool]:
    pools: list[Pool] = []

    def make(**options: float) -> Pool:
        pool = Pool("org/agent", SPEC, PoolOptions(**options), backend)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.aclose()
    assert not backend.open, "a pool left instances open"


async def test_warm_acquire_takes_an_idle_instance_and_refills(make_pool, backend) -> None:
    pool = make_pool(min_agents=1)
    await pool.start()
    await until(lambda: pool.stats().idle == 1, "a warm instance")
    warm = backend.handles[0]

    lease = await pool.acquire()

    assert lease.handle is warm and lease.cold_start is False
    assert isinstance(lease.handle, InstanceHandle)
    assert lease.handle.status == InstanceStatus.READY
    await until(lambda: pool.stats().idle == 1, "the refill")
    assert pool.stats().as_dict() == {"idle": 1, "starting": 0, "busy": 1, "total": 2, "waiting": 0}


async def test_cold_acquire_starts_an_instance(make_pool, backend) -> None:
    pool = make_pool(min_agents=0)
    lease = await pool.acquire()
    assert lease.cold_start is True
    assert lease.handle.status == InstanceStatus.READY
    assert len(backend.handles) == 1
    assert pool.stats().busy == 1 and pool.stats().total == 1


async def test_acquire_claims_an_instance_that_is_still_starting(make_pool, backend) -> None:
    backend.auto_ready = False
    pool = make_pool(min_agents=1)
    await pool.start()
    await until(lambda: len(backend.handles) == 1, "the warm start")
    first = backend.handles[0]

    acquiring = asyncio.create_task(pool.acquire())
    await until(lambda: len(backend.handles) == 2, "a refill for the claimed instance")
    assert not acquiring.done()
    first.gate.set()
    lease = await acquiring

    assert lease.handle is first and lease.cold_start is True
    assert pool.stats().busy == 1 and pool.stats().starting == 1


async def test_at_capacity(make_pool) -> None:
    pool = make_pool(max_agents=2)
    await pool.acquire()
    await pool.acquire()
    with pytest.raises(AtCapacity) as caught:
        await pool.acquire()
    assert caught.value.code == "PCC-AGENT-AT-CAPACITY"
    assert caught.value.status_code == 429
    assert "org/agent" in caught.value.message and "2" in caught.value.message


async def test_concurrent_acquires_never_exceed_the_cap(make_pool, backend) -> None:
    backend.auto_ready = False
    pool = make_pool(max_agents=3)
    acquires = [asyncio.create_task(pool.acquire()) for _ in range(10)]
    await until(lambda: sum(t.done() for t in acquires) == 7, "the refusals")
    assert pool.stats().total == 3
    backend.open_gates()
    results = await asyncio.gather(*acquires, return_exceptions=True)

    leases = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, AtCapacity)]
    assert len(leases) == 3 and len(refused) == 7
    assert len({lease.handle.id for lease in leases}) == 3
    assert len(backend.handles) == 3


async def test_churn_never_exceeds_the_cap(make_pool, backend) -> None:
    pool = make_pool(min_agents=1, max_agents=4, cooldown_seconds=0.01)
    peak = 0

    async def session() -> None:
        nonlocal peak
        try:
            lease = await pool.acquire()
        except AtCapacity:
            return
        peak = max(peak, pool.stats().total)
        await asyncio.sleep(0)
        await pool.release(lease.handle)

    for _ in range(20):
        await asyncio.gather(*(session() for _ in range(6)))
        peak = max(peak, pool.stats().total)
    assert peak <= 4
    assert backend.peak_open <= 4


async def test_a_failed_start_frees_its_slot(make_pool, backend) -> None:
    pool = make_pool(max_agents=1)
    backend.fail_starts = True
    with pytest.raises(InstanceFailed):
        await pool.acquire()
    assert pool.stats().total == 0
    await until(lambda: not backend.open, "the failed instance to be closed")

    backend.fail_starts = False
    lease = await pool.acquire()
    assert lease.handle.status == InstanceStatus.READY


async def test_a_backend_refusing_to_place_answers_the_caller_with_its_error(
    make_pool, backend
) -> None:
    backend.spawn_error = NoNodeInRegion("eu-lab")
    pool = make_pool(min_agents=0)
    with pytest.raises(NoNodeInRegion):
        await pool.acquire()
    assert pool.stats().total == 0


async def test_warm_start_failures_back_off_then_recover(make_pool, backend) -> None:
    backend.fail_starts = True
    pool = make_pool(min_agents=1)
    await pool.start()
    await until(lambda: backend.handles and not backend.open, "a failed warm start")
    backend.fail_starts = False
    await until(lambda: pool.stats().idle == 1, "the refill after the backoff")


async def test_release_closes_the_instance_and_refills(make_pool, backend) -> None:
    pool = make_pool(min_agents=1)
    await pool.start()
    await until(lambda: pool.stats().idle == 1, "a warm instance")
    lease = await pool.acquire()

    await pool.release(lease.handle)

    await until(lambda: lease.handle.closed, "the used instance to be closed")
    assert lease.handle not in backend.open
    assert pool.stats().busy == 0
    await until(lambda: pool.stats().idle >= 1, "a warm instance after the session")


async def test_a_finished_session_is_replaced_then_cools_down(make_pool, backend) -> None:
    pool = make_pool(min_agents=0, cooldown_seconds=0.2)
    leases = [await pool.acquire() for _ in range(3)]
    for lease in leases:
        await pool.release(lease.handle)

    # warm capacity follows the sessions that just ended...
    await until(lambda: pool.stats().idle == 3, "three cooldown replacements")
    replacements = [h for h in backend.handles if h not in [lease.handle for lease in leases]]
    assert all(h.status == InstanceStatus.READY for h in replacements)
    # ...and falls back to min_agents once they have idled for the cooldown
    await until(lambda: pool.stats().total == 0 and not backend.open, "the replacements to retire")


async def test_cooldown_keeps_min_agents(make_pool, backend) -> None:
    pool = make_pool(min_agents=1, cooldown_seconds=0.05)
    lease = await pool.acquire()
    await pool.release(lease.handle)
    await until(lambda: len(backend.handles) >= 3, "refill and replacement")
    await until(lambda: pool.stats().total == 1 and len(backend.open) == 1, "the cooldown")
    assert pool.stats().idle == 1


async def test_update_replaces_idle_instances_and_leaves_busy_ones(make_pool, backend) -> None:
    pool = make_pool(min_agents=2)
    await pool.start()
    await until(lambda: pool.stats().idle == 2, "warm instances")
    busy = (await pool.acquire()).handle
    await until(lambda: pool.stats().idle == 2, "the refill")
    old_idle = [h for h in backend.open if h is not busy]

    await pool.update(SPEC_2, PoolOptions(min_agents=2))

    await until(lambda: all(h.closed for h in old_idle), "old idle instances to be retired")
    await until(lambda: pool.stats().idle == 2, "new warm instances")
    assert not busy.closed and busy.status == InstanceStatus.READY
    assert pool.stats().busy == 1
    new_idle = [h for h in backend.open if h is not busy]
    assert {h.spec.deployment_id for h in new_idle} == {"d2"}

    await pool.release(busy)
    await until(lambda: busy.closed, "the old busy instance to close after its session")
    lease = await pool.acquire()
    assert lease.handle.spec.deployment_id == "d2" and lease.cold_start is False


async def test_update_with_the_same_spec_keeps_idle_instances(make_pool, backend) -> None:
    pool = make_pool(min_agents=1)
    await pool.start()
    await until(lambda: pool.stats().idle == 1, "a warm instance")
    await pool.update(SPEC, PoolOptions(min_agents=2))
    await until(lambda: pool.stats().idle == 2, "the new warm target")
    assert len(backend.handles) == 2


async def test_an_instance_starting_for_an_old_spec_is_not_kept(make_pool, backend) -> None:
    backend.auto_ready = False
    pool = make_pool(min_agents=1)
    await pool.start()
    await until(lambda: len(backend.handles) == 1, "a warm start")
    await pool.update(SPEC_2, PoolOptions(min_agents=1))
    await until(lambda: len(backend.handles) == 2, "a start of the new spec")
    backend.open_gates()
    await until(lambda: backend.handles[0].closed, "the old-spec instance to be retired")
    await until(lambda: pool.stats().idle == 1, "the new warm instance")
    assert (await pool.acquire()).handle.spec.deployment_id == "d2"


async def test_a_dead_idle_instance_is_replaced(make_pool, backend) -> None:
    pool = make_pool(min_agents=1)
    await pool.start()
    await until(lambda: pool.stats().idle == 1, "a warm instance")
    backend.handles[0].die()
    await until(lambda: len(backend.handles) == 2 and pool.stats().idle == 1, "a replacement")
    lease = await pool.acquire()
    assert lease.handle is backend.handles[1]


async def test_a_cancelled_acquire_gives_its_instance_back(make_pool, backend) -> None:
    backend.auto_ready = False
    pool = make_pool(max_agents=1)
    acquiring = asyncio.create_task(pool.acquire())
    await until(lambda: len(backend.handles) == 1, "a cold start")
    acquiring.cancel()
    with pytest.raises(asyncio.CancelledError):
        await acquiring
    backend.open_gates()
    await until(lambda: pool.stats().idle == 1, "the instance to become warm")
    lease = await pool.acquire()
    assert lease.handle is backend.handles[0] and lease.cold_start is False


async def test_aclose_closes_idle_busy_and_starting_instances(backend) -> None:
    pool = Pool("org/agent", SPEC, PoolOptions(min_agents=2), backend)
    await pool.start()
    await until(lambda: pool.stats().idle == 2, "warm instances")
    await pool.acquire()
    backend.auto_ready = False
    await until(lambda: pool.stats().starting == 1, "a refill that hangs")

    await pool.aclose()
    await pool.aclose()

    assert not backend.open
    assert all(h.status in (InstanceStatus.STOPPED, InstanceStatus.FAILED) for h in backend.handles)
    with pytest.raises(ServiceUnavailable):
        await pool.acquire()


async def test_pool_manager(backend) -> None:
    manager = PoolManager(backend)
    pool = await manager.ensure("org/a", SPEC, PoolOptions(min_agents=1))
    assert manager.get("org/a") is pool and manager.get("org/b") is None
    await until(lambda: pool.stats().idle == 1, "a warm instance")

    same = await manager.ensure("org/a", SPEC_2, PoolOptions(min_agents=1))
    assert same is pool and pool.spec is SPEC_2
    other = await manager.ensure("org/b", SPEC, PoolOptions(min_agents=1))
    await until(lambda: other.stats().idle == 1, "a warm instance of b")

    await manager.remove("org/a")
    assert manager.get("org/a") is None and pool.closed
    await manager.aclose()
    assert other.closed and not backend.open


class PreparingBackend(FakeBackend):
    """A backend with the optional ``prepare`` hook; it fails for one spec."""

    def __init__(self) -> None:
        super().__init__()
        self.prepared: list[InstanceSpec] = []

    async def prepare(self, spec: InstanceSpec) -> None:
        self.prepared.append(spec)
        if spec.deployment_id == "d2":
            raise RuntimeError("cannot prepare d2")


async def test_the_backend_is_prepared_for_each_new_spec() -> None:
    backend = PreparingBackend()
    pool = Pool("org/agent", SPEC, PoolOptions(min_agents=0), backend)  # type: ignore[arg-type]
    try:
        await pool.start()
        assert backend.prepared == [SPEC]
        await pool.start()
        assert backend.prepared == [SPEC]
        await pool.update(SPEC_2, PoolOptions(min_agents=0))  # its failure is only logged
        assert backend.prepared == [SPEC, SPEC_2]
        lease = await pool.acquire()
        assert lease.handle.spec == SPEC_2
        await pool.release(lease.handle)
    finally:
        await pool.aclose()


async def test_a_warm_acquires_replacement_waits_its_delay_whatever_the_ticks(
    make_pool, backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cattery.pools import pool as pool_module

    release = asyncio.Event()

    async def held_delay(_seconds: float) -> None:
        await release.wait()

    pool = make_pool(min_agents=1, cooldown_seconds=0)
    await pool.start()
    await until(lambda: pool.stats().idle == 1, "a warm instance")
    monkeypatch.setattr(pool_module.asyncio, "sleep", held_delay)  # the delay, held open
    await pool.acquire()
    await pool.maintain()  # a maintenance tick inside the delay
    assert pool.stats().starting == 0 and len(backend.handles) == 1
    monkeypatch.undo()
    release.set()  # the delay is over: the replacement starts
    await until(lambda: len(backend.handles) == 2, "the replacement")
