"""``python -m bench --cluster``: starts on a Ray cluster's remote nodes, in one run.

A head on 127.0.0.2 offering no CPU (the control plane's machine) and three worker nodes
on 127.0.0.3-.5, token auth, every instance on a worker: starts on a warm pool and on an
empty one (a fork by that node's host), a burst of 50 over the three workers, and a
Session API request through the control plane vs straight to the remote instance.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench import report
from bench.platform import ControlPlane, held_session, stamped_start
from bench.starts import StartRun, client, sequential_starts
from bench.stats import Results, Row, latency_figures, ms, percentile
from tests.support.cluster import RayTestCluster

WORKERS = ("127.0.0.3", "127.0.0.4", "127.0.0.5")
INSTANCE_TOKEN_HEADER = "x-cattery-instance-token"
#: the empty-pool start on a remote node must still be a fork
EMPTY_POOL_TARGET = 0.060


async def spread_burst(
    cp: ControlPlane, agent: str, n: int, stamps: Path, *, hold: float
) -> tuple[StartRun, Counter[str]]:
    """``n`` simultaneous starts on an empty pool; and how many landed on each node."""
    run, nodes = StartRun(), Counter[str]()
    await cp.wait_pool(agent, idle=0)

    async def one(i: int) -> float | None:
        stamp = stamps / f"{agent}-burst-{i}.json"
        try:
            started = await stamped_start(http, cp, agent, stamp, 120, hold=hold)
        except httpx.HTTPError:
            return None
        if started is None:
            return None
        nodes[started.record.get("node") or "?"] += 1
        return started.latency

    async with client() as http:
        results = await asyncio.gather(*(one(i) for i in range(n)))
    run.latencies = [r for r in results if r is not None]
    run.failures = n - len(run.latencies)
    return run, nodes


async def remote_proxy(cp: ControlPlane, agent: str, n: int, stamps: Path) -> tuple[list, list]:
    """``GET /ping`` through the control plane and straight to the remote instance."""
    stamp = stamps / f"{agent}-proxy.json"
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        held = await held_session(http, cp, agent, stamp)
        record, session = held.record, held.session
        address = await instance_address(record)
        proxied = f"{cp.url}/v1/public/{agent}/sessions/{session}/ping"
        public = {"Authorization": f"Bearer {cp.public_key}"}
        token = {INSTANCE_TOKEN_HEADER: record["token"]}
        via, direct = [], []
        async with (
            httpx.AsyncClient(timeout=30, trust_env=False) as a,
            httpx.AsyncClient(timeout=30, trust_env=False) as b,
        ):
            for _ in range(10):
                (await a.get(proxied, headers=public)).raise_for_status()
                (await b.get(f"{address}/ping", headers=token)).raise_for_status()
            for _ in range(n):
                t0 = time.perf_counter()
                (await a.get(proxied, headers=public)).raise_for_status()
                t1 = time.perf_counter()
                (await b.get(f"{address}/ping", headers=token)).raise_for_status()
                t2 = time.perf_counter()
                via.append(t1 - t0)
                direct.append(t2 - t1)
            await a.post(f"{cp.url}/v1/public/{agent}/sessions/{session}/end", headers=public)
    return via, direct


async def instance_address(record: dict) -> str:
    """The instance's own URL: its node's address and the port its process listens on."""
    import psutil

    for conn in psutil.Process(record["pid"]).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.ip == record["node"]:
            return f"http://{conn.laddr.ip}:{conn.laddr.port}"
    raise RuntimeError(f"instance {record['pid']} listens on nothing of {record['node']}")


def start_row(out: Results, name: str, run: StartRun, note: str = "") -> None:
    if run.failures:
        note = f"{run.failures} failed; {note}".rstrip("; ")
    out.add(Row("cluster", name, len(run.latencies), latency_figures(run.latencies), "", note))


async def measure(work: Path, starts: int, burst_n: int, proxy_n: int) -> Results:
    out = Results()
    stamps = work / "stamps"
    stamps.mkdir()
    os.chmod(stamps, 0o1777)
    cluster = RayTestCluster(Path(tempfile.mkdtemp(prefix="cattery-ray-")), port=6395)
    cp = ControlPlane(work / "control", fork=True, env=cluster.control_env())
    try:
        t0 = time.monotonic()
        cluster.start(workers=WORKERS)
        cluster_seconds = time.monotonic() - t0
        t0 = time.monotonic()
        cp.start()
        connect_seconds = time.monotonic() - t0
        print("cluster: deploying", flush=True)
        cp.deploy("warm", "stamp", min_agents=1, max_agents=50)
        cp.deploy("cold", "stamp", min_agents=0, max_agents=50)
        cp.deploy("burst", "stamp", min_agents=0, max_agents=50)
        cp.deploy("proxy", "stamp", min_agents=1, max_agents=50)
        await sequential_starts(cp, "cold", 1, stamps, warm=0)  # nodes unpack and load
        print(f"cluster: {starts} starts on a warm pool", flush=True)
        warm = await sequential_starts(cp, "warm", starts, stamps, warm=1)
        print(f"cluster: {starts} starts on an empty pool", flush=True)
        cold = await sequential_starts(cp, "cold", starts, stamps, warm=0)
        print(f"cluster: burst of {burst_n} over {len(WORKERS)} nodes", flush=True)
        await spread_burst(cp, "burst", len(WORKERS), stamps, hold=0.5)  # every node loads
        burst, nodes = await spread_burst(cp, "burst", burst_n, stamps, hold=3.0)
        print(f"cluster: {proxy_n} Session API requests to a remote instance", flush=True)
        via, direct = await remote_proxy(cp, "proxy", proxy_n, stamps)
    finally:
        cp.stop()
        leftovers = cluster.stop()
    start_row(out, "warm pool, remote node", warm)
    cold_p50 = percentile(cold.latencies, 50)
    verdict = "met" if cold_p50 <= EMPTY_POOL_TARGET else "NOT met"
    start_row(
        out, "empty pool, remote node (a fork there)", cold, f"target p50 <= 60 ms: {verdict}"
    )
    spread = ", ".join(f"{node}: {count}" for node, count in sorted(nodes.items()))
    figures = f"{len(burst.latencies)}/{burst_n} started; {latency_figures(burst.latencies)}"
    out.add(Row("cluster", f"burst of {burst_n} over three nodes", burst_n, figures, "", spread))
    names = (
        "Session API GET via the control plane to a remote node",
        "same GET straight to the remote instance",
    )
    out.add_overhead("cluster", via, direct, names)
    out.notes += [
        f"target empty-pool start on a remote node p50 <= 60 ms: {verdict} ({ms(cold_p50)})",
        f"cluster of 4 nodes up in {cluster_seconds:.1f} s; control plane connected and "
        f"serving in {connect_seconds:.1f} s",
        "every node is a `ray start` on this machine (127.0.0.2-.5): remote in Ray's sense "
        "(its own raylet, object store and node host), not across a network",
    ]
    if leftovers:
        out.notes.append(f"processes left after the cluster stopped (killed): {leftovers}")
    return out


async def sample_load(into: list[float]) -> None:
    """The 1-minute load average every few seconds: more than the cores means others
    shared the machine, and the figures are theirs too."""
    while True:
        into.append(os.getloadavg()[0])
        await asyncio.sleep(5.0)


async def run(out_dir: Path, *, starts: int, burst_n: int, proxy_n: int, argv: list[str]) -> Path:
    started = time.monotonic()
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="cattery-bench-"))
    os.chmod(work, 0o711)
    loads: list[float] = []
    sampler = asyncio.create_task(sample_load(loads))
    try:
        table = await measure(work, starts, burst_n, proxy_n)
    finally:
        sampler.cancel()
        shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    text = report.markdown(
        table,
        plan={"starts": starts, "burst": burst_n, "proxy_requests": proxy_n},
        argv=argv,
        elapsed=elapsed,
        load=load,
        loads_during=loads,
    )
    print()
    print(table.table())
    path = report.write(out_dir, text, kind="cluster")
    print(f"\nwrote {path} ({elapsed:.0f} s)")
    return path
