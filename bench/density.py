"""Density: N concurrent Twilio echo calls, each on its own instance, straight to the runtime.

Instances come from the local backend (forked, or plain processes), one per call, as the
control plane would lease them. Each call streams 20 ms mu-law frames in real time; the
echo bot (Silero VAD in its pipeline) sends them back byte for byte, so the n-th byte
received is the n-th byte sent and every frame's round trip is known: the time its last
byte came back minus the time it was sent. Per session memory is PSS and USS
(``memory_full_info``) taken mid-call; a forked instance's share of its parent is counted
by adding the parent's PSS, split over the sessions.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import websockets

from bench.platform import BOTS
from cattery.backends.base import InstanceSpec
from cattery.backends.local import LocalBackend

FRAME_MS = 20
FRAME_BYTES = 160  # 8 kHz mu-law, mono
TOKEN_HEADER = "x-cattery-instance-token"
FIRST_ECHO_TIMEOUT = 30.0


def ulaw_tone(seconds: float, freq: float = 440.0) -> bytes:
    """G.711 mu-law of a sine tone."""
    n = int(8000 * seconds)
    pcm = (8000 * np.sin(2 * np.pi * freq * np.arange(n) / 8000)).astype(np.int32)
    sign = np.where(pcm < 0, 0x80, 0)
    x = np.abs(np.clip(pcm, -32635, 32635)) + 0x84
    exponent = np.clip(np.floor(np.log2(x)).astype(np.int32) - 7, 0, 7)
    mantissa = (x >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


@dataclass
class CallResult:
    sent_frames: int = 0
    received_bytes: int = 0
    mismatched: bool = False
    rtts: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def lost_frames(self) -> int:
        return max(0, self.sent_frames - self.received_bytes // FRAME_BYTES)


async def echo_call(address: str, token: str, audio: bytes, tail: float) -> CallResult:
    """A call straight to an instance's ``/ws`` (see ``twilio_call``)."""
    url = address.replace("http://", "ws://") + "/ws"
    return await twilio_call(url, {TOKEN_HEADER: token}, audio, tail)


async def twilio_call(url: str, headers: dict[str, str], audio: bytes, tail: float) -> CallResult:
    """One call: one frame first, and once its echo is back (the bot's pipeline runs) the
    rest of ``audio`` in real time; collect the echo, hang up.

    The first frame's round trip is the bot's start, not the echo's: Pipecat's WebSocket
    output paces audio at exactly real time, so audio queued while a pipeline starts would
    delay every later frame by as much, for the whole call. It is left out of ``rtts``.
    """
    result = CallResult()
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    sid = "MZ" + uuid.uuid4().hex
    messages = [  # made before the clock starts: the client should cost little per frame
        json.dumps(
            {
                "event": "media",
                "streamSid": sid,
                "media": {"payload": base64.b64encode(frame).decode()},
            }
        )
        for frame in frames
    ]
    sent_at: list[float] = []
    received = bytearray()
    first_echo = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def read(ws: websockets.ClientConnection) -> None:
        async for message in ws:
            data = json.loads(message)
            if data.get("event") != "media":
                continue
            now = loop.time()
            first = len(received) // FRAME_BYTES
            received.extend(base64.b64decode(data["media"]["payload"]))
            first_echo.set()
            for frame in range(max(1, first), len(received) // FRAME_BYTES):
                if frame < len(sent_at):
                    result.rtts.append(now - sent_at[frame])

    try:
        async with websockets.connect(url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1"}))
            start = {
                "streamSid": sid,
                "callSid": "CA" + uuid.uuid4().hex,
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            }
            await ws.send(json.dumps({"event": "start", "streamSid": sid, "start": start}))
            reader = asyncio.create_task(read(ws))
            sent_at.append(loop.time())
            await ws.send(messages[0])
            result.sent_frames += 1
            await asyncio.wait_for(first_echo.wait(), FIRST_ECHO_TIMEOUT)
            t0 = loop.time()
            for i, message in enumerate(messages[1:]):
                sent_at.append(loop.time())
                await ws.send(message)
                result.sent_frames += 1
                delay = t0 + (i + 1) * FRAME_MS / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.sleep(tail)
            await ws.send(json.dumps({"event": "stop", "streamSid": sid}))
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        result.error = repr(exc)
    result.received_bytes = len(received)
    result.mismatched = bytes(received) != audio[: len(received)]
    return result


@dataclass
class DensityRun:
    mode: str
    calls: int
    rtts: list[float] = field(default_factory=list)
    lost_frames: int = 0
    sent_frames: int = 0
    failed_calls: int = 0
    cpu_cores: float = math.nan  # cores used by all instances together during the calls
    pss_mb: float = math.nan  # per session
    uss_mb: float = math.nan  # per session

    def tally(self, results: list[CallResult]) -> None:
        """Add the calls' round trips and frames; a call that failed or echoed wrong counts."""
        for result in results:
            if result.error or result.mismatched:
                self.failed_calls += 1
            self.rtts.extend(result.rtts)
            self.sent_frames += result.sent_frames
            self.lost_frames += result.lost_frames


def _memory(pids: list[int], parent: int | None) -> tuple[float, float]:
    pss = uss = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        pss += info.pss
        uss += info.uss
    if parent is not None:
        try:
            pss += psutil.Process(parent).memory_full_info().pss
        except psutil.Error:
            pass
    n = max(1, len(pids))
    return pss / n / 1e6, uss / n / 1e6


def _cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


async def density(
    state_dir: Path, *, fork: bool, calls: int, seconds: float, tail: float = 1.0
) -> DensityRun:
    """``calls`` concurrent echo calls on fresh instances of the echo-vad bot."""
    run = DensityRun("forked" if fork else "plain", calls)
    # no metrics sampler: its /proc reads would stall the callers' event loop, and Pipecat
    # keeps any stall of the incoming audio as a lasting delay of the echo
    backend = LocalBackend(state_dir, lambda i, ln: None, lambda i, c, m: None, 3600, fork=fork)
    spec = InstanceSpec("bench/echo-vad", "d1", str(BOTS / "echo-vad"), env={})
    handles = []
    try:
        for _ in range(calls):
            handles.append(await backend.spawn(spec))
        await asyncio.gather(*(h.ready(timeout=180) for h in handles))
        parent = backend.fork_servers.parent(spec.agent_key) if backend.fork_servers else None
        procs = [psutil.Process(h.pid) for h in handles]
        audio = ulaw_tone(seconds)
        tasks = [asyncio.create_task(echo_call(h.address, h.token, audio, tail)) for h in handles]
        # CPU over the calls' steady middle, while every instance is still running
        await asyncio.sleep(min(1.0, seconds / 4))
        cpu0, t0 = _cpu_seconds(procs), time.monotonic()
        await asyncio.sleep(seconds / 2)
        cpu1, t1 = _cpu_seconds(procs), time.monotonic()
        run.cpu_cores = (cpu1 - cpu0) / (t1 - t0)
        pids = [h.pid for h in handles]
        # in a thread: reading /proc for every instance must not stall the callers' loop
        run.pss_mb, run.uss_mb = await asyncio.to_thread(
            _memory, pids, parent.pid if parent else None
        )
        run.tally(await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(h.aclose(grace=5) for h in handles), return_exceptions=True)
        await backend.aclose()
    return run
