"""Start latency, refill and burst, through the control plane's public API.

Latency is ``POST /v1/public/{agent}/start`` until ``bot()`` is entered: the stamp bot
writes ``time.time()`` when it is called, the benchmark notes ``time.time()`` just before
it sends the request. Both clocks are the same machine's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.platform import BOTS, ControlPlane, Stamped, stamped_start, wait_stamp
from cattery.backends.base import InstanceSpec
from cattery.backends.local import LocalBackend
from cattery.pools import Pool, PoolOptions

STAMP_TIMEOUT = 120.0


@dataclass
class StartRun:
    latencies: list[float] = field(default_factory=list)
    refills: list[float] = field(default_factory=list)
    failures: int = 0
    #: the floor measured alongside: one dev-runner start just before each of these
    floor: list[float] = field(default_factory=list)

    def note(self, started: Stamped | None) -> None:
        """Count one start: its latency if it entered ``bot()``, else a failure."""
        if started is None:
            self.failures += 1
        else:
            self.latencies.append(started.latency)


#: one start on the floor (the dev runner): its latency, None when it failed
FloorStart = Callable[[httpx.AsyncClient, int], Awaitable[float | None]]


def client() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    return httpx.AsyncClient(timeout=httpx.Timeout(180.0), limits=limits, trust_env=False)


async def sequential_starts(
    cp: ControlPlane,
    agent: str,
    n: int,
    stamps: Path,
    *,
    warm: int,
    floor: FloorStart | None = None,
) -> StartRun:
    """``n`` starts one after another, each on a settled pool of ``warm`` idle instances.

    With ``warm`` > 0, the time until the pool is back at ``warm`` idle instances (the
    refill) is measured too, by polling the pool's figures. With ``floor``, a start on
    the floor goes just before each one: both see the machine as it is at that moment.
    """
    run = StartRun()
    async with client() as http:
        for i in range(n):
            await cp.wait_pool(agent, idle=warm)
            if floor is not None:
                on_floor = await floor(http, i)
                if on_floor is not None:
                    run.floor.append(on_floor)
            stamp = stamps / f"{agent}-{i}.json"
            started = await stamped_start(http, cp, agent, stamp, STAMP_TIMEOUT)
            run.note(started)
            if started is not None and warm:
                refilled = await refill_time(http, cp, agent, warm, started.sent)
                if refilled is not None:
                    run.refills.append(refilled)
    return run


async def refill_time(
    http: httpx.AsyncClient, cp: ControlPlane, agent: str, warm: int, t0: float
) -> float | None:
    """Seconds from ``t0`` until the pool shows ``warm`` idle instances again; None if the
    control plane reports no pool figures."""
    from bench.platform import ADMIN_TOKEN, ORG

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    deadline = time.monotonic() + STAMP_TIMEOUT
    while time.monotonic() < deadline:
        resp = await http.get(f"{cp.url}/v1/organizations/{ORG}/services/{agent}", headers=headers)
        pool = resp.json()["body"].get("pool")
        if pool is None:
            return None
        if pool["idle"] >= warm:
            return time.time() - t0
        await asyncio.sleep(0.005)
    return None


async def burst(
    cp: ControlPlane, agent: str, n: int, stamps: Path, *, hold: float, timeout: float
) -> StartRun:
    """``n`` simultaneous starts on an empty pool; each session holds ``hold`` seconds."""
    run = StartRun()
    await cp.wait_pool(agent, idle=0)

    async def one(i: int) -> float | None:
        stamp = stamps / f"{agent}-burst-{i}.json"
        try:
            started = await stamped_start(http, cp, agent, stamp, timeout, hold=hold)
        except httpx.HTTPError:
            return None
        return None if started is None else started.latency

    async with client() as http:
        results = await asyncio.gather(*(one(i) for i in range(n)))
    run.latencies = [r for r in results if r is not None]
    run.failures = n - len(run.latencies)
    return run


async def pool_burst(state_dir: Path, *, fork: bool, n: int, hold: float, stamps: Path) -> StartRun:
    """``n`` simultaneous sessions on an empty pool, straight through a ``Pool`` on the local
    backend: acquire (spawn and ready), then ``POST /bot``, until ``bot()`` is entered.
    The control plane's HTTP and database are left out."""
    backend = LocalBackend(state_dir, lambda i, ln: None, lambda i, c, m: None, 60.0, fork=fork)
    spec = InstanceSpec("bench/burst", "d1", str(BOTS / "stamp"), env={})
    options = PoolOptions(min_agents=0, max_agents=n, cooldown_seconds=0)
    pool = Pool("bench/burst", spec, options, backend)
    run = StartRun()
    async with client() as http:

        async def one(i: int, body: dict) -> float | None:
            stamp = stamps / f"pool-{'f' if fork else 'p'}-{i}.json"
            t0 = time.time()
            try:
                lease = await pool.acquire()
            except Exception:
                return None
            headers = {"x-cattery-instance-token": lease.handle.token}
            post = asyncio.create_task(
                http.post(
                    lease.handle.address + "/bot",
                    json={**body, "stamp": str(stamp)},
                    headers=headers,
                )
            )
            record = await wait_stamp(stamp, STAMP_TIMEOUT)
            await asyncio.gather(post, return_exceptions=True)
            await pool.release(lease.handle)
            return None if record is None else record["entered"] - t0

        try:
            await one(-1, {})  # the agent's first start: its forking parent loads
            await until_empty(pool)
            results = await asyncio.gather(*(one(i, {"hold": hold}) for i in range(n)))
        finally:
            await pool.aclose()
            await backend.aclose()
    run.latencies = [r for r in results if r is not None]
    run.failures = n - len(run.latencies)
    return run


async def until_empty(pool: Pool) -> None:
    while True:
        if pool.stats().total == 0:
            return
        await asyncio.sleep(0.05)
