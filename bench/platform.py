"""A real ``cattery serve`` on 127.0.0.1 for the benchmark, and what it needs to be driven.

The benchmark picks a free port and the control plane binds it (``--port``), as it would
in production. Each control plane gets its own state folder;
``fork`` chooses the local backend's mode (``CATTERY_BACKEND_FORK``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ADMIN_TOKEN = "sk_bench_admin_token"
ORG = "default"
REPO = Path(__file__).resolve().parents[1]
BOTS = Path(__file__).resolve().parent / "bots"
SETTLE_SECONDS = 0.1
SETTLE_WITHOUT_FIGURES = 3.0


def bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def bench_env(**extra: str) -> dict[str, str]:
    """Our environment without cattery's or Pipecat's settings, plus the benchmark's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATTERY_", "PIPECAT_"))}
    env.update(PYTHONUNBUFFERED="1", PIPECAT_LOG_LEVEL="INFO", CATTERY_ICE_FALLBACK_URLS="")
    env.update(extra)
    return env


class ControlPlane:
    """One ``cattery serve`` process and an admin client for it. Owned by one scenario."""

    def __init__(self, state_dir: Path, *, fork: bool, env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.fork = fork
        #: settings of this control plane beyond the benchmark's own
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.public_key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ControlPlane:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # The control plane binds its own port, as in production: given a socket with
        # --fd, uvicorn takes it for AF_UNIX and leaves Nagle's algorithm on (~20 ms more
        # per bridged telephony frame). The port is free when picked; nothing else races.
        sock = bind_loopback()
        self.port = sock.getsockname()[1]
        sock.close()
        env = bench_env(
            CATTERY_STATE_DIR=str(self.state_dir),
            CATTERY_ADMIN_TOKEN=ADMIN_TOKEN,
            CATTERY_BACKEND_FORK="1" if self.fork else "0",
            # idle instances beyond minAgents retire at once: an empty pool stays empty
            CATTERY_POOLS__COOLDOWN_SECONDS="0",
            CATTERY_POOLS__MAX_AGENTS="50",
            CATTERY_AGENT_ROOTS=str(BOTS),  # the bench's bots are the only agents
            **self.env,
        )
        with (self.state_dir / "control.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cattery.cli", "serve", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cattery serve exited; see {self.state_dir / 'control.log'}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError("cattery serve did not answer /healthz within 60 s")
        self.public_key = self._public_key()
        return self

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
        )

    def _public_key(self) -> str:
        with self.admin() as c:
            resp = c.post(
                f"/v1/organizations/{ORG}/apiKeys", json={"name": "bench", "type": "public"}
            )
            resp.raise_for_status()
            return resp.json()["key"]

    def deploy(self, name: str, bot: str, *, min_agents: int, max_agents: int) -> None:
        body = {
            "serviceName": name,
            "image": f"{BOTS / bot}:latest",
            "autoScaling": {"minAgents": min_agents, "maxAgents": max_agents},
        }
        with self.admin() as c:
            resp = c.post(f"/v1/organizations/{ORG}/services", json=body)
            if resp.status_code != 200:
                raise RuntimeError(f"deploy {name}: {resp.status_code} {resp.text}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            details = self.details(name)
            if details.get("errors"):
                raise RuntimeError(f"deploy {name}: {details['errors']}")
            if details.get("ready"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"agent {name} not ready within 120 s")

    def details(self, name: str) -> dict:
        with self.admin() as c:
            return c.get(f"/v1/organizations/{ORG}/services/{name}").json()["body"]

    async def wait_pool(self, name: str, *, idle: int, busy: int = 0, timeout: float = 120) -> None:
        """Until the agent's pool holds exactly ``idle`` warm instances, none starting.

        A control plane that reports no pool figures gets a fixed pause instead.
        """
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
        ) as c:
            while time.monotonic() < deadline:
                resp = await c.get(f"/v1/organizations/{ORG}/services/{name}")
                pool = resp.json()["body"].get("pool")
                if pool is None:
                    await asyncio.sleep(SETTLE_WITHOUT_FIGURES)
                    return
                if (pool["idle"], pool["starting"], pool["busy"]) == (idle, 0, busy):
                    await asyncio.sleep(SETTLE_SECONDS)  # a retired instance finishes exiting
                    return
                await asyncio.sleep(0.01)
        raise RuntimeError(f"pool of {name} did not settle at idle={idle} within {timeout} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        except ProcessLookupError:
            pass


async def start_session(
    client: httpx.AsyncClient, cp: ControlPlane, agent: str, body: dict
) -> tuple[int, str | None]:
    """``POST /v1/public/{agent}/start``; (status, session id)."""
    resp = await client.post(
        f"{cp.url}/v1/public/{agent}/start",
        json={"body": body},
        headers={"Authorization": f"Bearer {cp.public_key}"},
    )
    session = resp.json().get("sessionId") if resp.status_code == 200 else None
    return resp.status_code, session


@dataclass(frozen=True)
class Stamped:
    """A start that reached ``bot()``: when its request left and what the stamp bot wrote."""

    sent: float  # time.time() just before the request
    record: dict
    session: str

    @property
    def latency(self) -> float:
        """Seconds from the request until ``bot()`` was entered (one machine's clock)."""
        return self.record["entered"] - self.sent


async def stamped_start(
    client: httpx.AsyncClient,
    cp: ControlPlane,
    agent: str,
    stamp: Path,
    timeout: float,
    **body: object,
) -> Stamped | None:
    """Start a session of the stamp bot (``body`` beside the stamp's path) and wait for its
    stamp; None when the start was refused or ``bot()`` was not entered within ``timeout``."""
    sent = time.time()
    status, session = await start_session(client, cp, agent, {"stamp": str(stamp), **body})
    record = await wait_stamp(stamp, timeout) if status == 200 else None
    return None if record is None or session is None else Stamped(sent, record, session)


async def held_session(
    client: httpx.AsyncClient, cp: ControlPlane, agent: str, stamp: Path
) -> Stamped:
    """A session of the stamp bot held open (five minutes at most) for measuring requests to
    it; raises if it did not start."""
    started = await stamped_start(client, cp, agent, stamp, 60, hold=300)
    if started is None:
        raise RuntimeError(f"the held session of {agent} did not start")
    return started


async def wait_stamp(path: Path, timeout: float) -> dict | None:
    """The record the stamp bot wrote when ``bot()`` was entered, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = read_stamp(path)
        if record is not None:
            return record
        await asyncio.sleep(0.002)
    return None


def read_stamp(path: Path) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None
