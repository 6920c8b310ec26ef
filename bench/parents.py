"""``python -m bench.parents``: what idle agents cost, and starts on a live or retired parent.

One run, two control planes (``cattery serve``, forking, walls as the machine allows):

1. **Density of idle agents**, on the default settings: 1, then 10, then 50 agents of the
   stamp bot deployed at ``minAgents`` 0. After each step, the PSS of every process cattery
   runs (the control plane and all its descendants, from ``/proc/*/smaps_rollup``), split
   into the control plane, the shared parents and the agents' parents, and the marginal
   PSS per deployed agent. Beside it, the baseline: forking parents that import the whole
   stack themselves, as each agent's parent did before shared parents (five at once, so
   their shared libraries are shared as before).
2. **Start latency** (``POST /v1/public/{agent}/start`` until ``bot()`` is entered) of an
   agent whose parent is live, on the same control plane; then of an agent whose parent
   has retired, on a second control plane whose only change is
   ``CATTERY_PARENT_IDLE_SECONDS=1`` (on the default, a parent retires after ten minutes),
   next to the bot's own import time: ``prepare`` of the stamp bot in a process that has
   imported what a shared parent imports, what an agent parent formed anew pays.
3. **Forks**, without a control plane: from a fork request until the child answers
   ``/livez``, for a parent formed by a shared parent and, in the same run, for a parent
   that imported everything itself (the start of an instance on a live parent, before and
   after shared parents).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.platform import BOTS, ControlPlane, bench_env, stamped_start
from bench.starts import STAMP_TIMEOUT, StartRun, client, sequential_starts
from bench.stats import Results, Row, latency_figures, ms, percentile, ratio
from cattery.backends.base import InstanceSpec
from cattery.backends.forking import wire
from cattery.backends.forking.servers import ForkServers
from cattery.backends.local.environment import build_env
from cattery.backends.local.process import bind_loopback, instance_env, parent_launch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024
STEPS = (1, 10, 50)
#: what an idle agent cost before shared parents (the issue's measurement, this machine)
TARGET_MIB_PER_AGENT = 10.0
#: the retired parent's start may exceed the bot's own import by this much
TARGET_RETIRED_OVER_IMPORT = 0.050
#: the last recorded empty-pool start on a forked instance (bench/results/2026-11-22-0817-2c.md)
RECORDED_EMPTY_POOL_P50 = 0.041
SETTLE_SECONDS = 2.0
BASELINE_PARENTS = 5
RETIRE_TIMEOUT = 30.0
IMPORT_SAMPLES = 5
FORK_SAMPLES = 30

IMPORT_TIMER = """
import sys, time
from cattery.backends.forking.shared import preload
preload()
from cattery.runtime.main import prepare
from cattery.runtime.options import RuntimeOptions
t0 = time.perf_counter()
prepare(sys.argv[1], RuntimeOptions.from_env(host="127.0.0.1"))
print("IMPORT", time.perf_counter() - t0, flush=True)
"""


def pss_of(pid: int) -> int:
    """The process's proportional set size in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    """Every process below ``root``, from ``/proc`` (one pass over it)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def command_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Footprint:
    agents: int
    total: int  # bytes of PSS, everything cattery runs
    control: int
    shared: int
    parents: int
    agent_parents: int  # how many agent parents were counted


def footprint(cp: ControlPlane, agents: int) -> Footprint:
    """PSS of the control plane and all it runs: its shared parents are its children, the
    agents' parents theirs."""
    assert cp.proc is not None
    server = cp.proc.pid
    below = descendants(server)
    shared = [
        pid
        for pid in below
        if _ppid(pid) == server and "cattery.backends.forking.shared" in command_of(pid)
    ]
    shared_pids = set(shared)
    formed = [pid for pid in below if _ppid(pid) in shared_pids]
    sizes = {pid: pss_of(pid) for pid in [server, *below]}
    return Footprint(
        agents=agents,
        total=sum(sizes.values()),
        control=sizes[server],
        shared=sum(sizes[pid] for pid in shared),
        parents=sum(sizes[pid] for pid in formed),
        agent_parents=len(formed),
    )


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def stamp_parent(
    log_path: Path, control: socket.socket, lifeline_r: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """A forking parent of the stamp bot that imports the stack and the bot itself, as each
    agent's parent did before shared parents; driven over ``control``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cattery.backends.forking.parent",
                str(BOTS / "stamp"),
                "--control-fd",
                str(control.fileno()),
                "--lifeline-fd",
                str(lifeline_r),
            ],
            pass_fds=[control.fileno(), lifeline_r],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=BOTS / "stamp",
        )


def baseline_parents(work: Path, n: int) -> float:
    """Mean PSS (bytes) of ``n`` forking parents that each import the stack and the stamp
    bot themselves, side by side: what each agent's parent cost before shared parents."""
    procs, sockets = [], []
    lifeline_r, lifeline_w = os.pipe()
    env = bench_env()
    try:
        for i in range(n):
            ours, theirs = wire.socket_pair()
            sockets.append(ours)
            procs.append(stamp_parent(work / f"baseline-parent-{i}.log", theirs, lifeline_r, env))
            theirs.close()
        for sock in sockets:
            sock.settimeout(120)
            message = wire.decode(sock.recv(wire.MAX_PACKET))
            if message.get("event") != "ready":
                raise RuntimeError(f"a baseline parent did not load: {message}")
        time.sleep(SETTLE_SECONDS)
        return statistics.mean(pss_of(proc.pid) for proc in procs)
    finally:
        for sock in sockets:
            sock.close()  # each parent exits on end of file
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        os.close(lifeline_r)
        os.close(lifeline_w)


async def _serving(http: httpx.AsyncClient, port: int) -> None:
    """Until the instance on ``port`` answers ``/livez`` (the backend's readiness probe)."""
    while True:
        try:
            if (await http.get(f"http://127.0.0.1:{port}/livez", timeout=5)).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.002)


def _end(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # its parent reaps it
    except ProcessLookupError:
        pass


async def fork_to_serving(work: Path, n: int) -> tuple[list[float], list[float]]:
    """From a fork request until the child answers ``/livez``: ``n`` children of an agent
    parent formed by a shared parent, then ``n`` of a parent that imported everything
    itself (as before shared parents); both driven straight, without a control plane."""
    spec = InstanceSpec("bench/stamp", "d1", str(BOTS / "stamp"), env={})
    logs = work / "forks"
    logs.mkdir()
    env = instance_env(spec, "bench-token")
    servers = ForkServers(logs, build_env({}, token=None), idle_seconds=3600)
    formed: list[float] = []
    http = httpx.AsyncClient(trust_env=False, verify=False)  # no CA bundle: plain loopback
    try:
        launch = parent_launch(spec, logs / "parent.log")
        await servers.prepare(spec, launch)  # formed before the clock starts, as at deploy
        for i in range(n):
            sock = bind_loopback()
            with (logs / f"formed-{i}.log").open("ab") as log:
                t0 = time.perf_counter()
                forked = await servers.fork(spec, launch, env, sock, log.fileno())
                port = sock.getsockname()[1]
                sock.close()
                assert forked is not None, "the stamp bot was not forked"
                await _serving(http, port)
                formed.append(time.perf_counter() - t0)
            _end(forked.pid)
    finally:
        await http.aclose()
        await servers.aclose()
    own = await asyncio.to_thread(own_parent_forks, spec, logs, n)
    return formed, own


def own_parent_forks(spec: InstanceSpec, logs: Path, n: int) -> list[float]:
    """``fork_to_serving``'s baseline: a parent that imports the stack and the bot itself."""
    env = instance_env(spec, "bench-token")
    own: list[float] = []
    ours, theirs = wire.socket_pair()
    lifeline_r, lifeline_w = os.pipe()
    parent = stamp_parent(logs / "own-parent.log", theirs, lifeline_r, instance_env(spec, None))
    theirs.close()
    http = httpx.Client(trust_env=False, verify=False)
    try:
        ours.settimeout(120)
        assert wire.decode(ours.recv(wire.MAX_PACKET)).get("event") == "ready"
        for i in range(n):
            sock = bind_loopback()
            with (logs / f"own-{i}.log").open("ab") as log:
                t0 = time.perf_counter()
                request = {"op": "fork", "id": i, "env": env, "one_session": True}
                socket.send_fds(ours, [wire.encode(request)], [sock.fileno(), log.fileno()])
                port = sock.getsockname()[1]
                sock.close()
                while "pid" not in (reply := wire.decode(ours.recv(wire.MAX_PACKET))):
                    pass  # an exit report of an earlier child
                _serving_blocking(http, port)
                own.append(time.perf_counter() - t0)
            _end(int(reply["pid"]))
    finally:
        http.close()
        ours.close()
        parent.wait(30)
        os.close(lifeline_r)
        os.close(lifeline_w)
    return own


def _serving_blocking(http: httpx.Client, port: int) -> None:
    while True:
        try:
            if http.get(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.002)


def bot_import_seconds(samples: int) -> list[float]:
    """The stamp bot's own import, each in a fresh process that has the shared stack."""
    found = []
    for _ in range(samples):
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_TIMER, str(BOTS / "stamp")],
            capture_output=True,
            text=True,
            env=bench_env(),
            cwd=BOTS / "stamp",
            timeout=120,
            check=True,
        )
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith("IMPORT "))
        found.append(float(line.split()[1]))
    return found


def agent_processes(cp: ControlPlane, folder: Path) -> list[int]:
    """The processes of ``cp`` working in ``folder``: an agent's parent and instances."""
    assert cp.proc is not None
    found = []
    for pid in descendants(cp.proc.pid):
        try:
            if os.readlink(f"/proc/{pid}/cwd") == str(folder):
                found.append(pid)
        except OSError:
            continue
    return found


def formation_seconds(cp: ControlPlane) -> list[float]:
    """How long each agent parent took to form and load its bot, as the control plane
    logged it (from the request to the shared parent until the parent was ready)."""
    found = []
    for line in (cp.state_dir / "control.log").read_text(errors="replace").splitlines():
        if "Forking parent" in line and "loaded its bot in" in line:
            found.append(float(line.rsplit("loaded its bot in", 1)[1].split()[0]))
    return found


async def retired_starts(cp: ControlPlane, agent: str, n: int, stamps: Path) -> StartRun:
    """``n`` starts, each once the agent's parent has retired (no process of it is left)."""
    run = StartRun()
    folder = (BOTS / "stamp").resolve()
    async with client() as http:
        for i in range(n):
            await cp.wait_pool(agent, idle=0)
            deadline = time.monotonic() + RETIRE_TIMEOUT
            # another process's exit: there is nothing to await but /proc
            while agent_processes(cp, folder) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            if agent_processes(cp, folder):
                raise RuntimeError(f"the parent of {agent} did not retire")
            stamp = stamps / f"{agent}-{i}.json"
            run.note(await stamped_start(http, cp, agent, stamp, STAMP_TIMEOUT))
    return run


def density_rows(out: Results, steps: list[Footprint], baseline: float) -> None:
    first = steps[0]
    for step in steps:
        marginal = ""
        if step.agents > first.agents:
            per = (step.total - first.total) / (step.agents - first.agents) / MIB
            marginal = f"{per:.1f} MiB per added agent"
        per_parent = step.parents / max(1, step.agent_parents) / MIB
        figures = (
            f"total {step.total / MIB:.0f} MiB (control plane {step.control / MIB:.0f}, "
            f"shared parent {step.shared / MIB:.0f}, {step.agent_parents} agent parents "
            f"{step.parents / MIB:.0f}: {per_parent:.1f} each)"
        )
        name = f"{step.agents} deployed, minAgents 0"
        out.add(Row("idle agents", name, step.agents, figures, marginal))
    out.add(
        Row(
            "idle agents",
            "baseline: a parent that imports the stack itself",
            BASELINE_PARENTS,
            f"{baseline / MIB:.1f} MiB PSS each",
            "",
            "each agent's parent before shared parents",
        )
    )
    last = steps[-1]
    per = (last.total - first.total) / (last.agents - first.agents) / MIB
    ok = per <= TARGET_MIB_PER_AGENT
    out.notes.append(
        f"target ≤ {TARGET_MIB_PER_AGENT:g} MiB per idle agent at {last.agents} agents: "
        f"{'met' if ok else 'NOT met'} ({per:.1f} MiB; {baseline / MIB / per:.1f}x less than "
        f"the baseline's {baseline / MIB:.1f} MiB)"
    )


def fork_rows(out: Results, formed: list[float], own: list[float]) -> None:
    p50 = percentile(formed, 50)
    own50 = percentile(own, 50)
    out.add(
        Row(
            "forks",
            "fork request until the child serves, agent parent formed by a shared parent",
            len(formed),
            latency_figures(formed),
            f"p50 {ratio(p50, own50)} faster" if p50 <= own50 else f"p50 {p50 / own50:.2f}x",
            "no control plane",
        )
    )
    out.add(
        Row(
            "forks",
            "same, parent that imported everything itself",
            len(own),
            latency_figures(own),
            "",
            "baseline: each agent's parent before shared parents",
        )
    )
    ok = p50 <= own50 * 1.1
    out.notes.append(
        f"target fork on a live parent unchanged (within 10% of a self-importing parent's, "
        f"same run): {'met' if ok else 'NOT met'} ({ms(p50)} vs {ms(own50)})"
    )


def start_rows(
    out: Results,
    live: StartRun,
    retired: StartRun,
    imports: list[float],
    formations: list[float],
) -> None:
    live50 = percentile(live.latencies, 50)
    out.add(
        Row(
            "starts",
            "agent whose parent is live (empty pool, forked)",
            len(live.latencies),
            latency_figures(live.latencies),
            f"{live50 / RECORDED_EMPTY_POOL_P50:.2f}x the recorded empty-pool p50 "
            f"({ms(RECORDED_EMPTY_POOL_P50)})",
            f"{live.failures} failed" if live.failures else "",
        )
    )
    import50 = statistics.median(imports)
    retired50 = percentile(retired.latencies, 50)
    out.add(
        Row(
            "starts",
            "agent whose parent has retired (formed again, then forked)",
            len(retired.latencies),
            latency_figures(retired.latencies),
            f"+{ms(retired50 - import50)} over the bot's import at p50",
            f"{retired.failures} failed" if retired.failures else "CATTERY_PARENT_IDLE_SECONDS=1",
        )
    )
    out.add(
        Row(
            "starts",
            "the bot's own import (prepare, common stack already imported)",
            len(imports),
            f"median {ms(import50)}",
            "",
            "what a parent formed anew pays",
        )
    )
    if formations:
        out.add(
            Row(
                "starts",
                "forming a retired agent's parent, as the control plane logs it",
                len(formations),
                latency_figures(formations),
                f"+{ms(percentile(formations, 50) - import50)} over the bot's import at p50",
                "shared parent's fork, walls, bot import, ready",
            )
        )
    ok = retired50 <= import50 + TARGET_RETIRED_OVER_IMPORT
    out.notes.append(
        f"target retired-parent start p50 ≤ bot import + {ms(TARGET_RETIRED_OVER_IMPORT)}: "
        f"{'met' if ok else 'NOT met'} ({ms(retired50)} vs {ms(import50)} + "
        f"{ms(TARGET_RETIRED_OVER_IMPORT)})"
    )
    out.notes.append(
        f"a retired parent adds {ms(retired50 - live50)} to a start at p50 (retired minus live): "
        f"the bot's import ({ms(import50)}) and {ms(retired50 - live50 - import50)} for the "
        f"shared parent's fork, the walls and the runtime's app"
    )
    ok = live50 <= RECORDED_EMPTY_POOL_P50 * 1.1
    out.notes.append(
        f"target live-parent start p50 unchanged from the recorded empty-pool figure: "
        f"{'met' if ok else 'NOT met'} ({ms(live50)} vs {ms(RECORDED_EMPTY_POOL_P50)})"
    )


async def measure(work: Path, starts: int, retired: int) -> Results:
    out = Results()
    stamps = work / "stamps"
    cp = ControlPlane(work / "density", fork=True).start()
    steps: list[Footprint] = []
    try:
        deployed = 0
        for target in STEPS:
            print(f"parents: {target} agents deployed at minAgents 0", flush=True)
            while deployed < target:
                deployed += 1
                cp.deploy(f"idle{deployed:03d}", "stamp", min_agents=0, max_agents=50)
            await asyncio.sleep(SETTLE_SECONDS)
            steps.append(footprint(cp, deployed))
        print(f"parents: {starts} starts of an agent whose parent is live", flush=True)
        live = await sequential_starts(cp, "idle001", starts, stamps, warm=0)
    finally:
        cp.stop()
    print(f"parents: baseline, {BASELINE_PARENTS} parents importing everything", flush=True)
    baseline = await asyncio.to_thread(baseline_parents, work, BASELINE_PARENTS)
    density_rows(out, steps, baseline)
    cp = ControlPlane(work / "retired", fork=True, env={"CATTERY_PARENT_IDLE_SECONDS": "1"})
    cp.start()
    try:
        cp.deploy("retiring", "stamp", min_agents=0, max_agents=50)
        print(f"parents: {retired} starts of an agent whose parent has retired", flush=True)
        after = await retired_starts(cp, "retiring", retired, stamps)
        formations = formation_seconds(cp)[1:]  # the first formed at deploy
    finally:
        cp.stop()
    print(f"parents: {FORK_SAMPLES} forks each from a formed and a self-importing parent")
    formed, own = await fork_to_serving(work, FORK_SAMPLES)
    fork_rows(out, formed, own)
    print(f"parents: the bot's own import, {IMPORT_SAMPLES} times", flush=True)
    imports = await asyncio.to_thread(bot_import_seconds, IMPORT_SAMPLES)
    start_rows(out, live, after, imports, formations)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.parents", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--starts", type=int, default=30, help="starts on a live parent")
    parser.add_argument("--retired", type=int, default=10, help="starts on a retired parent")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the .md goes")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="cattery-bench-"))
    # Bots run as their organization's unprivileged user: they cross ``work`` and write stamps.
    os.chmod(work, 0o711)
    (work / "stamps").mkdir()
    os.chmod(work / "stamps", 0o1777)
    try:
        results = asyncio.run(measure(work, args.starts, args.retired))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for note in results.notes:
        print(note)
    now = datetime.now(UTC)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{now:%Y-%m-%d-%H%M}-parents-{os.cpu_count()}c.md"
    after = os.getloadavg()
    notes = "\n".join(f"- {note}" for note in results.notes)
    path.write_text(
        f"# cattery idle agents and their parents, {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"- command: `python -m bench.parents --starts {args.starts} --retired "
        f"{args.retired}`; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores; load average before {load[0]:.2f}, after {after[0]:.2f}\n"
        f"- PSS from /proc/<pid>/smaps_rollup of the control plane and every process below "
        f"it; an agent's parent is formed by its interpreter's shared parent\n\n"
        f"{results.table()}\n\n{notes}\n"
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
