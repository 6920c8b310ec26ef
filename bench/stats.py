"""Percentiles, the results table, and the Markdown file it is written to."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    return f"{value:.0f} ms" if value >= 100 else f"{value:.1f} ms"


def ratio(value: float, baseline: float) -> str:
    """How many times better ``value`` is than ``baseline`` (both: lower is better)."""
    if math.isnan(value) or math.isnan(baseline) or value <= 0:
        return ""
    return f"{baseline / value:.1f}x"


@dataclass
class Row:
    """One measured line: what, how many samples, the figures, and how it compares."""

    section: str
    name: str
    n: int | str
    figures: str
    versus: str = ""
    note: str = ""


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.name}: {row.figures} {row.versus}".rstrip(), flush=True)

    def add_overhead(
        self, section: str, via: Sequence[float], direct: Sequence[float], names: tuple[str, str]
    ) -> None:
        """Two rows: requests through the control plane (``via``), with their p50 overhead,
        and the same requests straight to the instance (``direct``), the baseline."""
        overhead = percentile(via, 50) - percentile(direct, 50)
        via_name, direct_name = names
        self.add(
            Row(
                section,
                via_name,
                len(via),
                latency_figures(via),
                f"+{ms(overhead)} at p50",
                "overhead vs straight",
            )
        )
        self.add(Row(section, direct_name, len(direct), latency_figures(direct), "", "baseline"))

    def table(self) -> str:
        """The rows as one Markdown table, a section column first."""
        lines = [
            "| part | measurement | n | result | vs baseline | note |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        section = None
        for row in self.rows:
            shown = row.section if row.section != section else ""
            section = row.section
            cells = (shown, row.name, str(row.n), row.figures, row.versus, row.note)
            lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
        return "\n".join(lines)


def latency_figures(samples: Sequence[float]) -> str:
    return f"p50 {ms(percentile(samples, 50))}, p99 {ms(percentile(samples, 99))}"
