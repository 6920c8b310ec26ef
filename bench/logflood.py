"""``python -m bench.logflood``: private API latency while a bot prints 50 MB, and what the
flood adds to the state dir.

One control plane (the local backend), one agent whose session prints ``--mb`` MB of
100-character lines as fast as it can. A client calls ``GET .../services/{agent}`` (a
database read) back to back, first on a quiet machine (the baseline), then during the
flood until all of it has been read (its summary line is stored). Writes a Markdown row
to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.platform import ADMIN_TOKEN, ORG, ControlPlane, start_session
from bench.stats import Results, Row, ms, percentile

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUIET_CALLS = 200


def disk_usage(folder: Path) -> int:
    """Bytes of disk the folder's files take (a sparse file counts what it holds)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


async def _calls(cp: ControlPlane, agent: str, until: asyncio.Event | int) -> list[float]:
    """Private API calls back to back: ``until`` many, or until the event is set."""
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=cp.url, headers=headers, timeout=60) as c:
        while (len(latencies) < until) if isinstance(until, int) else not until.is_set():
            began = time.monotonic()
            resp = await c.get(f"/v1/organizations/{ORG}/services/{agent}")
            latencies.append(time.monotonic() - began)
            resp.raise_for_status()
    return latencies


async def _flood_read(cp: ControlPlane, agent: str, session: str, done: asyncio.Event) -> None:
    """Sets ``done`` once the flood has been read whole: its summary line is stored."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"/v1/organizations/{ORG}/services/{agent}/logs"
    params = {"sessionId": session, "limit": 100}
    async with httpx.AsyncClient(base_url=cp.url, headers=headers, timeout=60) as c:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            lines = (await c.get(url, params=params)).json().get("logs", [])
            if any("not stored" in line["log"] for line in lines):
                break
            await asyncio.sleep(0.5)
    done.set()


async def log_flood(cp: ControlPlane, mb: float) -> list[Row]:
    cp.deploy("flood", "log-flood", min_agents=1, max_agents=1)
    await cp.wait_pool("flood", idle=1)
    quiet = await _calls(cp, "flood", QUIET_CALLS)
    before = disk_usage(cp.state_dir)
    done = asyncio.Event()
    async with httpx.AsyncClient(timeout=60) as http:
        status, session = await start_session(http, cp, "flood", {"mb": mb})
    if status != 200 or session is None:
        raise RuntimeError(f"the flood's start answered {status}")
    ended = asyncio.create_task(_flood_read(cp, "flood", session, done))
    during = await _calls(cp, "flood", done)
    await ended
    await asyncio.sleep(2)  # the last batches reach the database
    grown = disk_usage(cp.state_dir) - before

    def figures(samples: list[float]) -> str:
        return f"p50 {ms(percentile(samples, 50))}, p99 {ms(percentile(samples, 99))}"

    return [
        Row(
            "logs",
            f"private API GET during a {mb:g} MB log flood",
            len(during),
            figures(during),
            note=f"state dir grew {grown / 1e6:.1f} MB",
        ),
        Row("logs", "same GET, no flood", len(quiet), figures(quiet), note="baseline"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.logflood", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mb", type=float, default=50.0, help="how much the bot prints")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the .md goes")
    args = parser.parse_args(argv)
    results = Results()
    with tempfile.TemporaryDirectory(prefix="cattery-bench-") as tmp:
        cp = ControlPlane(Path(tmp) / "state", fork=True).start()
        try:
            for row in asyncio.run(log_flood(cp, args.mb)):
                results.add(row)
        finally:
            cp.stop()
    now = datetime.now(UTC)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{now:%Y-%m-%d-%H%M}-logflood-{os.cpu_count()}c.md"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    path.write_text(
        f"# cattery log flood, {now:%Y-%m-%d %H:%M} UTC\n\n"
        f"- command: `python -m bench.logflood --mb {args.mb:g}`; load average after: {load}\n\n"
        f"{results.table()}\n"
    )
    print(f"written to {path}")


if __name__ == "__main__":
    main()
