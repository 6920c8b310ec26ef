"""``python -m bench.webhooks``: does a session webhook that hangs slow starts down?

One control plane, two agents of the stamp bot: ``plain`` has no webhook, ``hooked`` posts
its session events to a receiver that accepts the connection and never answers. Warm
starts alternate between the two; each is timed from ``POST .../start`` until ``bot()`` is
entered. The hooked agent's figures should match the plain one's (ratio about 1.0x).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.platform import BOTS, ORG, ControlPlane, stamped_start
from bench.starts import STAMP_TIMEOUT, client
from bench.stats import Results, Row, latency_figures, percentile, ratio
from tests.support.webhooks import hanging_endpoint


def deploy(cp: ControlPlane, name: str, webhook_url: str | None) -> None:
    body = {
        "serviceName": name,
        "image": f"{BOTS / 'stamp'}:latest",
        "autoScaling": {"minAgents": 1, "maxAgents": 2},
    }
    if webhook_url:
        body["sessionWebhookUrl"] = webhook_url
    with cp.admin() as c:
        resp = c.post(f"/v1/organizations/{ORG}/services", json=body)
        resp.raise_for_status()
    deadline = time.monotonic() + 120
    while not cp.details(name).get("ready"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"agent {name} not ready")
        time.sleep(0.1)


async def run(n: int) -> Results:
    results = Results()
    async with hanging_endpoint() as url:
        with tempfile.TemporaryDirectory(prefix="cattery-bench-webhooks-") as tmp:
            cp = ControlPlane(Path(tmp) / "state", fork=True).start()
            try:
                deploy(cp, "plain", None)
                deploy(cp, "hooked", url)
                latencies = await alternate_starts(cp, n, Path(tmp))
            finally:
                cp.stop()
    plain, hooked = latencies["plain"], latencies["hooked"]
    results.add(Row("webhooks", "warm start, no webhook", len(plain), latency_figures(plain)))
    results.add(
        Row(
            "webhooks",
            "warm start, webhook receiver hangs",
            len(hooked),
            latency_figures(hooked),
            ratio(percentile(hooked, 50), percentile(plain, 50)),
            "ratio vs no webhook (p50); ~1.0x: the webhook holds up nothing",
        )
    )
    return results


async def alternate_starts(cp: ControlPlane, n: int, stamps: Path) -> dict[str, list[float]]:
    """``n`` warm starts of each agent, alternating which goes first; their latencies."""
    latencies: dict[str, list[float]] = {"plain": [], "hooked": []}
    async with client() as http:
        for i in range(n):
            order = ("plain", "hooked") if i % 2 == 0 else ("hooked", "plain")
            for agent in order:
                await cp.wait_pool(agent, idle=1)
                stamp = stamps / f"{agent}-{i}.json"
                started = await stamped_start(http, cp, agent, stamp, STAMP_TIMEOUT)
                if started is not None:
                    latencies[agent].append(started.latency)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="starts per agent")
    args = parser.parse_args()
    results = asyncio.run(run(args.n))
    print(results.table())


if __name__ == "__main__":
    main()
