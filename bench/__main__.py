"""``python -m bench [--quick]``: cattery's start, refill, burst, density and proxy figures.

Everything runs on 127.0.0.1 in one go: two control planes (the local backend forking
instances, then starting plain ``cattery runtime`` processes: the baseline), Pipecat's
own development runner (every session a task in one process: the no-isolation floor),
then echo calls straight to instances of both kinds and into one dev-runner process. It
prints a table, each figure with its ratio to the baseline measured in the same run, and
writes it as Markdown to ``bench/results/<date>-<cores>c.md`` with the machine, the
versions and the machine's load during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import report
from bench.density import DensityRun, density
from bench.devrunner import DEV_MODE, DevRunner, dev_density, dev_starts, floor_starts
from bench.floor import floor_targets
from bench.platform import ControlPlane
from bench.proxy import FrameRun, frame_overhead, proxy_overhead
from bench.starts import StartRun, burst, client, pool_burst, sequential_starts
from bench.stats import Results, Row, latency_figures, ms, percentile, ratio

RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOAD_SAMPLE_SECONDS = 5.0


@dataclass(frozen=True)
class Plan:
    """How much of everything to measure (``--quick`` shrinks it)."""

    starts: int
    plain_starts: int
    plain_warm_starts: int
    dev_starts: int
    burst: int
    plain_burst: bool  # 50 plain processes at once: about a minute of both cores
    density: tuple[int, ...]
    plain_density: tuple[int, ...]
    dev_density: tuple[int, ...]
    call_seconds: float
    proxy_requests: int
    bridge_calls: int


FULL = Plan(100, 30, 10, 100, 50, True, (10, 20, 40), (10, 20, 40), (10, 20, 40), 6.0, 300, 3)
QUICK = Plan(20, 6, 3, 20, 50, False, (10,), (10,), (10,), 4.0, 100, 1)


def parse_args(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: about 2 minutes")
    parser.add_argument("--starts", type=int, help="starts per forked/warm series")
    parser.add_argument("--plain-starts", type=int, help="starts of the plain baseline")
    parser.add_argument("--density", help="concurrent calls, e.g. 10,20,40")
    parser.add_argument("--plain-density", help="concurrent calls on plain instances")
    parser.add_argument("--dev-density", help="concurrent calls in one dev-runner process")
    parser.add_argument("--no-density", action="store_true", help="skip the echo calls")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the .md goes")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="only the Ray cluster's figures: starts on remote nodes, a burst over three, "
        "proxy overhead (needs the cluster extra: ray)",
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    changes: dict[str, object] = {}
    if args.starts:
        changes["starts"] = args.starts
    if args.plain_starts:
        changes["plain_starts"] = args.plain_starts
    if args.density:
        changes["density"] = tuple(int(n) for n in args.density.split(","))
    if args.plain_density:
        changes["plain_density"] = tuple(int(n) for n in args.plain_density.split(","))
    if args.dev_density:
        changes["dev_density"] = tuple(int(n) for n in args.dev_density.split(","))
    if args.no_density:
        changes["density"] = changes["plain_density"] = changes["dev_density"] = ()
    return Plan(**{**plan.__dict__, **changes}), args


async def forked_platform(work: Path, plan: Plan, results: dict[str, object]) -> None:
    cp = ControlPlane(work / "forked", fork=True).start()
    stamps = work / "stamps"
    # the floor, measured start by start beside the warm and empty-pool series
    floor = DevRunner("stamp", work / "dev" / "devrunner-paired.log").start()
    try:
        print("forked: deploying", flush=True)
        cp.deploy("warm", "stamp", min_agents=1, max_agents=50)
        cp.deploy("cold", "stamp", min_agents=0, max_agents=50)
        cp.deploy("burst", "stamp", min_agents=0, max_agents=50)
        cp.deploy("proxy", "stamp", min_agents=1, max_agents=50)
        cp.deploy("echo", "echo-vad", min_agents=1, max_agents=50)
        print("forked: first start of an agent (its parent loaded at deploy)", flush=True)
        results["first"] = await sequential_starts(cp, "cold", 1, stamps, warm=0)
        async with client() as http:  # the dev runner's lazy imports, before it counts
            await floor_starts(floor, stamps, "warm-up")(http, -1)
        print(f"forked: {plan.starts} starts on a warm pool", flush=True)
        results["warm"] = await sequential_starts(
            cp, "warm", plan.starts, stamps, warm=1, floor=floor_starts(floor, stamps, "warm")
        )
        print(f"forked: {plan.starts} starts on an empty pool", flush=True)
        results["cold"] = await sequential_starts(
            cp, "cold", plan.starts, stamps, warm=0, floor=floor_starts(floor, stamps, "cold")
        )
        floor.stop()
        print(f"forked: burst of {plan.burst}", flush=True)
        await sequential_starts(cp, "burst", 1, stamps, warm=0)  # its parent loads
        results["burst"] = await burst(cp, "burst", plan.burst, stamps, hold=3.0, timeout=120)
        print(f"forked: {plan.proxy_requests} Session API requests", flush=True)
        results["proxy"] = await proxy_overhead(cp, "proxy", plan.proxy_requests, stamps)
        print(f"forked: {plan.bridge_calls} echo calls through /ws/twilio and straight", flush=True)
        results["frames"] = await frame_overhead(
            cp, "echo", work / "bridge", calls=plan.bridge_calls, seconds=plan.call_seconds
        )
    finally:
        floor.stop()
        cp.stop()


async def plain_platform(work: Path, plan: Plan, results: dict[str, object]) -> None:
    cp = ControlPlane(work / "plain", fork=False).start()
    stamps = work / "stamps-plain"
    try:
        print("plain: deploying", flush=True)
        cp.deploy("warm", "stamp", min_agents=1, max_agents=50)
        cp.deploy("cold", "stamp", min_agents=0, max_agents=50)
        print(f"plain: {plan.plain_warm_starts} starts on a warm pool (refill baseline)")
        results["plain_warm"] = await sequential_starts(
            cp, "warm", plan.plain_warm_starts, stamps, warm=1
        )
        cp.deploy("warm", "stamp", min_agents=0, max_agents=50)  # its warm instance goes
        print(f"plain: {plan.plain_starts} starts on an empty pool (baseline)", flush=True)
        results["plain_cold"] = await sequential_starts(
            cp, "cold", plan.plain_starts, stamps, warm=0
        )
    finally:
        cp.stop()


async def dev_runner(work: Path, plan: Plan, results: dict[str, object]) -> None:
    print(f"dev runner: {plan.dev_starts} starts in its process (the floor)", flush=True)
    results["dev"] = await dev_starts(work / "dev", plan.dev_starts, work / "stamps")


async def pool_bursts(work: Path, plan: Plan, results: dict[str, object]) -> None:
    print(f"pool: burst of {plan.burst}, forked", flush=True)
    results["pool_burst"] = await pool_burst(
        work / "pool-forked", fork=True, n=plan.burst, hold=3.0, stamps=work / "stamps"
    )
    if plan.plain_burst:
        print(f"pool: burst of {plan.burst}, plain processes", flush=True)
        results["plain_pool_burst"] = await pool_burst(
            work / "pool-plain", fork=False, n=plan.burst, hold=3.0, stamps=work / "stamps"
        )


async def densities(work: Path, plan: Plan, results: dict[str, object]) -> None:
    runs: list[DensityRun] = []
    for calls in plan.density:
        print(f"density: {calls} calls on forked instances", flush=True)
        runs.append(
            await density(
                work / f"density-f{calls}", fork=True, calls=calls, seconds=plan.call_seconds
            )
        )
    for calls in plan.plain_density:
        print(f"density: {calls} calls on plain instances", flush=True)
        runs.append(
            await density(
                work / f"density-p{calls}", fork=False, calls=calls, seconds=plan.call_seconds
            )
        )
    for calls in plan.dev_density:
        print(f"density: {calls} calls in one dev-runner process", flush=True)
        runs.append(await dev_density(work / "dev", calls=calls, seconds=plan.call_seconds))
    results["density"] = runs


def build_table(results: dict[str, object]) -> Results:
    out = Results()
    first, warm, cold = results["first"], results["warm"], results["cold"]
    plain_cold, plain_warm = results["plain_cold"], results["plain_warm"]
    assert isinstance(plain_cold, StartRun) and isinstance(plain_warm, StartRun)
    base = percentile(plain_cold.latencies, 50)
    base99 = percentile(plain_cold.latencies, 99)

    def start_row(name: str, run: StartRun, note: str = "", baseline: bool = False) -> None:
        p50, p99 = percentile(run.latencies, 50), percentile(run.latencies, 99)
        versus = "" if baseline else f"p50 {ratio(p50, base)} / p99 {ratio(p99, base99)} faster"
        if run.failures:
            note = f"{run.failures} failed; {note}".rstrip("; ")
        out.add(
            Row(
                "start → bot()",
                name,
                len(run.latencies),
                latency_figures(run.latencies),
                versus,
                note,
            )
        )

    assert isinstance(warm, StartRun) and isinstance(cold, StartRun) and isinstance(first, StartRun)
    dev = results.get("dev")
    floor = percentile(dev.latencies, 50) if isinstance(dev, StartRun) else math.nan

    def over_floor(run: StartRun) -> str:
        if math.isnan(floor):
            return ""
        return f"+{ms(percentile(run.latencies, 50) - floor)} over the dev runner at p50"

    start_row("warm pool (forked instances)", warm, over_floor(warm))
    start_row("empty pool, forked", cold, over_floor(cold))
    start_row("empty pool, plain processes", plain_cold, "baseline", baseline=True)
    start_row("warm pool, plain processes", plain_warm)
    start_row("agent's first start after its deploy (parent loaded then)", first)
    if isinstance(dev, StartRun):
        start_row("Pipecat dev runner: bot() in its own process", dev, "no isolation: the floor")
        series = {"warm": warm.latencies, "cold": cold.latencies}
        # The verdict is against the dev runner's own run (starts back to back, its
        # lowest figure); the floor measured beside each series (a dev-runner start just
        # before each start, after the same idle wait) is shown next to it.
        own = floor_targets({"warm": dev.latencies, "cold": dev.latencies}, series)
        beside = floor_targets({"warm": warm.floor, "cold": cold.floor}, series)
        for target, paired in zip(own, beside, strict=True):
            n = len(series["warm" if target.name.startswith("warm") else "cold"])
            versus = f"{paired.times:.1f}x the floor beside it ({ms(paired.floor)})"
            out.add(
                Row("start vs floor", target.name, n, target.figures(), versus, target.verdict())
            )
            out.notes.append(
                f"target {target.name} <= {target.limit:g}x the dev runner's p50: "
                f"{'met' if target.met else 'NOT met'} ({target.times:.1f}x; "
                f"{paired.times:.1f}x the floor measured beside it)"
            )

    refill, plain_refill = warm.refills, plain_warm.refills
    out.add(
        Row(
            "refill",
            "pool back at its warm target, forked",
            len(refill),
            latency_figures(refill),
            f"p50 {ratio(percentile(refill, 50), percentile(plain_refill, 50))} faster",
            "from the start request",
        )
    )
    out.add(
        Row(
            "refill",
            "same, plain processes",
            len(plain_refill),
            latency_figures(plain_refill),
            "",
            "baseline",
        )
    )

    def burst_row(name: str, run: StartRun, versus: str = "", note: str = "") -> None:
        total = len(run.latencies) + run.failures
        figures = f"{len(run.latencies)}/{total} started; {latency_figures(run.latencies)}"
        out.add(Row("burst", name, total, figures, versus, note))

    cb, fb, pb = results["burst"], results["pool_burst"], results.get("plain_pool_burst")
    assert isinstance(cb, StartRun) and isinstance(fb, StartRun)
    versus = ""
    if isinstance(pb, StartRun):
        r50 = ratio(percentile(fb.latencies, 50), percentile(pb.latencies, 50))
        r99 = ratio(percentile(fb.latencies, 99), percentile(pb.latencies, 99))
        versus = f"p50 {r50} / p99 {r99} faster"
    burst_row("all at once through the control plane, forked", cb)
    burst_row("all at once on a pool (no control plane), forked", fb, versus)
    if isinstance(pb, StartRun):
        burst_row("same, plain processes", pb, note="baseline")

    runs = results.get("density") or []
    plain_by_n = {r.calls: r for r in runs if r.mode == "plain"}  # type: ignore[attr-defined]
    dev_by_n = {r.calls: r for r in runs if r.mode == DEV_MODE}  # type: ignore[attr-defined]
    for run in runs:  # type: ignore[assignment]
        assert isinstance(run, DensityRun)
        figures = (
            f"p99 RTT {ms(percentile(run.rtts, 99))} (p50 {ms(percentile(run.rtts, 50))}); "
            f"lost {run.lost_frames}/{run.sent_frames} frames; "
            f"CPU {run.cpu_cores / run.calls * 100:.1f}% of a core per call; "
            f"PSS {run.pss_mb:.1f} MB, USS {run.uss_mb:.1f} MB per session"
        )
        versus = ""
        base_run, dev_run = plain_by_n.get(run.calls), dev_by_n.get(run.calls)
        if run.mode == "forked":
            against = []
            if base_run is not None:
                against.append(f"PSS {ratio(run.pss_mb, base_run.pss_mb)} smaller than plain")
            if dev_run is not None:
                against.append(f"{run.pss_mb / dev_run.pss_mb:.1f}x the dev runner's PSS")
            versus = "; ".join(against)
        note = {"plain": "baseline", DEV_MODE: "no isolation"}.get(run.mode, "")
        if run.failed_calls:
            note = f"{run.failed_calls} calls failed; {note}".rstrip("; ")
        out.add(
            Row("density", f"{run.calls} echo calls, {run.mode}", run.calls, figures, versus, note)
        )

    targets(out, results)
    px = results["proxy"]
    via, direct = px.via_control, px.direct  # type: ignore[attr-defined]
    names = ("Session API GET via the control plane", "same GET straight to the instance")
    out.add_overhead("proxy", via, direct, names)
    frames = results["frames"]
    assert isinstance(frames, FrameRun)
    bridge = percentile(frames.via_control, 50) - percentile(frames.direct, 50)
    note = "echo round trip per 20 ms frame"
    if frames.failed_calls:
        note = f"{frames.failed_calls} calls lost frames or failed; {note}"
    out.add(
        Row(
            "proxy",
            "Twilio frame echo through /ws/twilio",
            len(frames.via_control),
            latency_figures(frames.via_control),
            f"{'+' if bridge >= 0 else ''}{ms(bridge)} at p50",
            note,
        )
    )
    out.add(
        Row(
            "proxy",
            "same, straight to an instance's /ws",
            len(frames.direct),
            latency_figures(frames.direct),
            "",
            "baseline",
        )
    )
    return out


def targets(out: Results, results: dict[str, object]) -> None:
    """Issue 4's targets next to what this run measured."""
    warm, cold, plain_cold = results["warm"], results["cold"], results["plain_cold"]
    fb = results["pool_burst"]
    assert isinstance(warm, StartRun) and isinstance(cold, StartRun)
    assert isinstance(plain_cold, StartRun) and isinstance(fb, StartRun)
    px = results["proxy"]
    overhead = percentile(px.via_control, 50) - percentile(px.direct, 50)  # type: ignore[attr-defined]
    speedup = percentile(plain_cold.latencies, 50) / percentile(cold.latencies, 50)
    checks = [
        (
            "warm start p50 <= 15 ms",
            percentile(warm.latencies, 50) <= 0.015,
            ms(percentile(warm.latencies, 50)),
        ),
        (
            "warm start p99 <= 50 ms",
            percentile(warm.latencies, 99) <= 0.050,
            ms(percentile(warm.latencies, 99)),
        ),
        (
            "empty-pool start p50 <= 150 ms",
            percentile(cold.latencies, 50) <= 0.150,
            ms(percentile(cold.latencies, 50)),
        ),
        ("empty-pool start >= 8x faster than plain", speedup >= 8, f"{speedup:.1f}x"),
        (
            "refill <= 200 ms (p50)",
            percentile(warm.refills, 50) <= 0.200,
            ms(percentile(warm.refills, 50)),
        ),
        (
            "burst: 50 of 50 started, p99 <= 1.5 s (pool)",
            len(fb.latencies) == 50 and percentile(fb.latencies, 99) <= 1.5,
            f"{len(fb.latencies)}/50, p99 {ms(percentile(fb.latencies, 99))}",
        ),
        ("proxy overhead p50 <= 1 ms", overhead <= 0.001, ms(overhead)),
    ]
    frames = results["frames"]
    bridge = percentile(frames.via_control, 50) - percentile(frames.direct, 50)  # type: ignore[attr-defined]
    checks.append(("telephony frame overhead p50 <= 1 ms", bridge <= 0.001, ms(bridge)))
    for run in results.get("density") or []:  # type: ignore[attr-defined]
        if run.mode == "forked" and run.calls >= 30:
            ok = percentile(run.rtts, 99) <= 0.060 and run.lost_frames == 0 and run.pss_mb <= 40
            p99 = ms(percentile(run.rtts, 99))
            figures = f"p99 {p99}, lost {run.lost_frames}, PSS {run.pss_mb:.1f} MB"
            checks.append((f"{run.calls} calls: p99 <= 60 ms, no loss, PSS <= 40 MB", ok, figures))
    for name, ok, figures in checks:
        out.notes.append(f"target {name}: {'met' if ok else 'NOT met'} ({figures})")


async def run(plan: Plan, args: argparse.Namespace) -> None:
    started = time.monotonic()
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="cattery-bench-"))
    # Bots run as their organization's unprivileged user: they cross ``work`` and write stamps.
    os.chmod(work, 0o711)
    for stamps in ("stamps", "stamps-plain"):
        (work / stamps).mkdir()
        os.chmod(work / stamps, 0o1777)
    results: dict[str, object] = {}
    loads: list[float] = []
    sampler = asyncio.create_task(sample_load(loads))
    try:
        await forked_platform(work, plan, results)
        await plain_platform(work, plan, results)
        await dev_runner(work, plan, results)
        await pool_bursts(work, plan, results)
        await densities(work, plan, results)
    finally:
        sampler.cancel()
        shutil.rmtree(work, ignore_errors=True)
    table = build_table(results)
    elapsed = time.monotonic() - started
    text = report.markdown(
        table,
        plan=plan.__dict__,
        argv=sys.argv[1:],
        elapsed=elapsed,
        load=load,
        loads_during=loads,
    )
    print()
    print(table.table())
    path = report.write(args.out, text)
    print(f"\nwrote {path} ({elapsed:.0f} s)")


async def sample_load(into: list[float]) -> None:
    """The machine's 1-minute load average every few seconds: the benchmark's own load is
    at most its cores' worth, so more means others shared the machine."""
    while True:
        into.append(os.getloadavg()[0])
        await asyncio.sleep(LOAD_SAMPLE_SECONDS)


def main(argv: list[str] | None = None) -> None:
    if not sys.platform.startswith("linux"):
        print("note: forking is Linux-only; both control planes will start plain processes")
    plan, args = parse_args(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    if args.cluster:
        from bench.cluster import run as run_cluster

        starts = args.starts or (20 if args.quick else 100)
        asyncio.run(
            run_cluster(
                args.out,
                starts=starts,
                burst_n=plan.burst,
                proxy_n=plan.proxy_requests,
                argv=sys.argv[1:],
            )
        )
        return
    asyncio.run(run(plan, args))


if __name__ == "__main__":
    main()
