"""Pipecat's own development runner (``pipecat.runner.run``): the no-isolation baseline.

``python -m bench.pipecat_runner FOLDER --port N`` serves FOLDER's ``bot.py`` as
``python bot.py`` would: one process that has imported Pipecat and the bot once, where every
session is a task. It is the floor for start latency (no process, no fork, no control
plane) and the other way to pack calls on a machine: all of them in one process.

Starts go to the runner's ``POST /start`` (``transport: daily`` without a room runs
``bot()`` at once with the body); calls go to its Twilio WebSocket route ``/ws``.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from bench.density import DensityRun, twilio_call, ulaw_tone
from bench.platform import BOTS, REPO, bench_env, bind_loopback, wait_stamp
from bench.starts import STAMP_TIMEOUT, FloorStart, StartRun, client

#: the density rows' name for calls in one dev-runner process
DEV_MODE = "one dev-runner process"


class DevRunner:
    """One dev-runner process serving one benchmark bot. Owned by one scenario."""

    def __init__(self, bot: str, log_path: Path) -> None:
        self.folder = BOTS / bot
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> DevRunner:
        sock = bind_loopback()  # a free port; the runner binds it itself, as uvicorn does
        self.port = sock.getsockname()[1]
        sock.close()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.pipecat_runner",
                    str(self.folder),
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=bench_env(),
                cwd=REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the dev runner exited; see {self.log_path}")
            try:
                if httpx.get(self.url + "/status", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the dev runner did not answer /status within 120 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass


def floor_starts(runner: DevRunner, stamps: Path, name: str) -> FloorStart:
    """One start on ``runner`` at a time, for ``sequential_starts`` to pair with its own."""

    async def one(http: httpx.AsyncClient, i: int) -> float | None:
        stamp = stamps / f"dev-{name}-{i}.json"
        t0 = time.time()
        resp = await http.post(
            runner.url + "/start", json={"transport": "daily", "body": {"stamp": str(stamp)}}
        )
        record = await wait_stamp(stamp, STAMP_TIMEOUT) if resp.status_code == 200 else None
        return None if record is None else record["entered"] - t0

    return one


async def dev_starts(state_dir: Path, n: int, stamps: Path) -> StartRun:
    """``n`` starts one after another through the runner's ``POST /start``."""
    runner = DevRunner("stamp", state_dir / "devrunner-stamp.log").start()
    run = StartRun()
    try:
        async with client() as http:
            for i in range(-1, n):  # the first one warms the runner's lazy imports up
                stamp = stamps / f"dev-{i}.json"
                t0 = time.time()
                resp = await http.post(
                    runner.url + "/start",
                    json={"transport": "daily", "body": {"stamp": str(stamp)}},
                )
                record = await wait_stamp(stamp, STAMP_TIMEOUT) if resp.status_code == 200 else None
                if i < 0:
                    continue
                if record is None:
                    run.failures += 1
                    continue
                run.latencies.append(record["entered"] - t0)
    finally:
        runner.stop()
    return run


async def dev_density(
    state_dir: Path, *, calls: int, seconds: float, tail: float = 1.0
) -> DensityRun:
    """``calls`` concurrent echo calls, all in one dev-runner process of the echo-vad bot."""
    run = DensityRun(DEV_MODE, calls)
    runner = DevRunner("echo-vad", state_dir / f"devrunner-echo-{calls}.log").start()
    try:
        proc = psutil.Process(runner.pid)
        audio = ulaw_tone(seconds)
        url = runner.url.replace("http://", "ws://") + "/ws"
        tasks = [asyncio.create_task(twilio_call(url, {}, audio, tail)) for _ in range(calls)]
        await asyncio.sleep(min(1.0, seconds / 4))  # the same steady middle as the instances'
        cpu0, t0 = _cpu_seconds(proc), time.monotonic()
        await asyncio.sleep(seconds / 2)
        cpu1, t1 = _cpu_seconds(proc), time.monotonic()
        run.cpu_cores = (cpu1 - cpu0) / (t1 - t0)
        run.pss_mb, run.uss_mb = await asyncio.to_thread(_memory_per_session, proc, calls)
        run.tally(await asyncio.gather(*tasks))
    finally:
        runner.stop()
    return run


def _cpu_seconds(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return math.nan
    return t.user + t.system


def _memory_per_session(proc: psutil.Process, calls: int) -> tuple[float, float]:
    """The whole process's PSS and USS split over its sessions: all of it serves them."""
    try:
        info = proc.memory_full_info()
    except psutil.Error:
        return math.nan, math.nan
    return info.pss / calls / 1e6, info.uss / calls / 1e6
