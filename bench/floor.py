"""Start latency against the floor: Pipecat's dev runner measured in the same run.

Absolute times follow the machine (a slower CPU, a busier one); the ratio of a start to
the dev runner's mostly doesn't. The start targets are such ratios, for what a user gets
(``cattery serve`` with its defaults), held against the dev runner's own run (starts back
to back: its lowest figure). The floor is also measured beside each series (one
dev-runner start just before each start, after the same idle wait, under the same load),
which reads higher.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.stats import ms, percentile


@dataclass(frozen=True)
class FloorTarget:
    """One start figure as a multiple of the floor's p50, and the multiple it may be."""

    name: str
    seconds: float
    floor: float
    limit: float

    @property
    def times(self) -> float:
        if math.isnan(self.seconds) or math.isnan(self.floor) or self.floor <= 0:
            return math.nan
        return self.seconds / self.floor

    @property
    def met(self) -> bool:
        return not math.isnan(self.times) and self.times <= self.limit

    def figures(self) -> str:
        return f"{ms(self.seconds)} = {self.times:.1f}x the floor ({ms(self.floor)})"

    def verdict(self) -> str:
        return f"target <= {self.limit:g}x: {'met' if self.met else 'NOT met'}"


#: (what, which start series, percentile, at most this many times the floor's p50)
START_TARGETS = (
    ("warm start p50", "warm", 50, 4.0),
    ("warm start p99", "warm", 99, 12.0),
    ("empty-pool (forked) start p50", "cold", 50, 20.0),
)


def floor_targets(
    floors: dict[str, Sequence[float]], series: dict[str, Sequence[float]]
) -> list[FloorTarget]:
    """Each start target with this run's figures: ``series`` are the control plane's
    start latencies by name (``warm``, ``cold``), ``floors`` the dev runner's measured
    beside each (a start on the floor just before each start: the same load on both)."""
    return [
        FloorTarget(
            name, percentile(series.get(key, []), p), percentile(floors.get(key, []), 50), limit
        )
        for name, key, p, limit in START_TARGETS
    ]
