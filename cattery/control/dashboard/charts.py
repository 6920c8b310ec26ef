"""Line charts as inline SVG, drawn on the server: no script, no chart library.

A chart is a title, a unit and points ``(seconds since start, value)``; it scales to its
box (``viewBox``, width 100% in CSS), so it reads the same on a phone and a desktop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 26


@dataclass(frozen=True)
class Chart:
    title: str
    svg: Markup
    summary: str


def line_chart(
    title: str,
    points: Sequence[tuple[float, float]],
    *,
    fmt: Callable[[float], str],
    css_class: str = "series",
    x_labels: tuple[str, str] | None = None,
) -> Chart:
    """``points`` as a polyline with its range on the y axis and, unless ``x_labels`` name
    its ends, the span in seconds on the x axis."""
    if not points:
        return Chart(title, Markup(""), "no samples yet")
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    x0, x1 = min(xs), max(xs)
    top = max(ys) * 1.1 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (plot_w * (x - x0) / (x1 - x0) if x1 > x0 else plot_w / 2)

    def py(y: float) -> float:
        return TOP + plot_h * (1 - y / top)

    coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5"/>' for x, y in points)
    grid = "".join(
        f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(top * f):.1f}" '
        f'y2="{py(top * f):.1f}"/>'
        f'<text class="axis" x="{LEFT - 6}" y="{py(top * f) + 4:.1f}" text-anchor="end">'
        f"{escape(fmt(top * f))}</text>"
        for f in (0.0, 0.5, 1.0)
    )
    first, last = x_labels or (
        "0 s",
        f"{x1 - x0:.1f} s" if x1 - x0 < 10 else f"{x1 - x0:.0f} s",
    )
    svg = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}">{grid}'
        f'<text class="axis" x="{LEFT}" y="{HEIGHT - 6}">{escape(first)}</text>'
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        f"{escape(last)}</text>"
        f'<polyline class="{escape(css_class)}" points="{coords}"/>'
        f'<g class="{escape(css_class)} dots">{dots}</g></svg>'
    )
    summary = f"{len(points)} samples, peak {fmt(max(ys))}"
    return Chart(title, Markup(svg), summary)


def millicores(value: float) -> str:
    return f"{value:.0f} m"


def megabytes(value: float) -> str:
    return f"{value / 1_000_000:.0f} MB"


def milliseconds(value: float) -> str:
    return f"{value * 1000:.0f} ms"
