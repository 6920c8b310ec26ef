"""Proxy overhead: a Session API ``GET`` through the control plane vs straight to the instance.

One live session of the stamp bot (held open); its instance's port is read from the
process (psutil), its token from what the bot recorded. Requests alternate between the
two paths, each on its own keep-alive connection, so both see the same machine state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.density import echo_call, twilio_call, ulaw_tone
from bench.platform import BOTS, ORG, ControlPlane, held_session
from cattery.backends.base import InstanceSpec
from cattery.backends.local import LocalBackend

INSTANCE_TOKEN_HEADER = "x-cattery-instance-token"


@dataclass
class ProxyRun:
    via_control: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)


@dataclass
class FrameRun:
    """Echo round trips of Twilio frames: through ``/ws/twilio`` and straight to ``/ws``."""

    via_control: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    failed_calls: int = 0


def listening_port(pid: int) -> int:
    for conn in psutil.Process(pid).net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.ip == "127.0.0.1":
            return conn.laddr.port
    raise RuntimeError(f"instance {pid} listens on no loopback port")


async def proxy_overhead(cp: ControlPlane, agent: str, n: int, stamps: Path) -> ProxyRun:
    run = ProxyRun()
    stamp = stamps / f"{agent}-proxy.json"
    async with httpx.AsyncClient(timeout=60, trust_env=False) as http:
        held = await held_session(http, cp, agent, stamp)
        record, session = held.record, held.session
        port = listening_port(record["pid"])
        proxied = f"{cp.url}/v1/public/{agent}/sessions/{session}/ping"
        public = {"Authorization": f"Bearer {cp.public_key}"}
        direct = f"http://127.0.0.1:{port}/ping"
        token = {INSTANCE_TOKEN_HEADER: record["token"]}
        async with (
            httpx.AsyncClient(timeout=30, trust_env=False) as a,
            httpx.AsyncClient(timeout=30, trust_env=False) as b,
        ):
            for _ in range(10):  # connections opened, caches warm
                (await a.get(proxied, headers=public)).raise_for_status()
                (await b.get(direct, headers=token)).raise_for_status()
            for _ in range(n):
                t0 = time.perf_counter()
                (await a.get(proxied, headers=public)).raise_for_status()
                t1 = time.perf_counter()
                (await b.get(direct, headers=token)).raise_for_status()
                t2 = time.perf_counter()
                run.via_control.append(t1 - t0)
                run.direct.append(t2 - t1)
            await a.post(f"{cp.url}/v1/public/{agent}/sessions/{session}/end", headers=public)
    return run


async def frame_overhead(
    cp: ControlPlane, agent: str, state_dir: Path, *, calls: int, seconds: float
) -> FrameRun:
    """Echo calls taking turns: through the control plane's Twilio bridge (the agent named
    by ``serviceHost``), then straight to an instance of the same bot, forked alike."""
    run = FrameRun()
    audio = ulaw_tone(seconds)
    bridged = f"{cp.url.replace('http://', 'ws://')}/ws/twilio?serviceHost={agent}.{ORG}"
    backend = LocalBackend(state_dir, lambda i, ln: None, lambda i, c, m: None, 3600, fork=True)
    spec = InstanceSpec("bench/echo-direct", "d1", str(BOTS / "echo-vad"), env={})
    try:
        for _ in range(calls):
            await cp.wait_pool(agent, idle=1)
            via = await twilio_call(bridged, {}, audio, tail=1.0)
            handle = await backend.spawn(spec)
            await handle.ready(timeout=120)
            direct = await echo_call(handle.address, handle.token, audio, tail=1.0)
            await handle.aclose()
            for result, into in ((via, run.via_control), (direct, run.direct)):
                if result.error or result.mismatched or result.lost_frames:
                    run.failed_calls += 1
                into.extend(result.rtts)
    finally:
        await backend.aclose()
    return run
