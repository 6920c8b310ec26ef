"""The dashboard's server-drawn charts and its words for an agent's health."""

from __future__ import annotations

import re

from cattery.control.dashboard import charts
from cattery.control.dashboard.views import health


def polyline(svg: str) -> list[tuple[float, float]]:
    points = re.search(r'<polyline class="[^"]+" points="([^"]+)"', svg).group(1)
    return [tuple(map(float, p.split(","))) for p in points.split()]


def test_a_chart_scales_its_points_into_its_box() -> None:
    chart = charts.line_chart("CPU", [(0.0, 0.0), (1.5, 50.0), (3.0, 100.0)], fmt=charts.millicores)
    xs, ys = zip(*polyline(chart.svg), strict=True)
    assert xs[0] == charts.LEFT and xs[-1] == charts.WIDTH - charts.RIGHT
    assert ys[0] == charts.HEIGHT - charts.BOTTOM  # zero sits on the axis
    assert ys[0] > ys[1] > ys[2] >= charts.TOP  # higher values are drawn higher
    assert chart.summary == "3 samples, peak 100 m"
    assert "3.0 s" in chart.svg and 'viewBox="0 0 600 180"' in chart.svg


def test_one_sample_or_none() -> None:
    one = charts.line_chart("Memory", [(0.0, 40e6)], fmt=charts.megabytes)
    ((x, _),) = polyline(one.svg)
    assert charts.LEFT < x < charts.WIDTH - charts.RIGHT and "peak 40 MB" in one.summary
    none = charts.line_chart("Memory", [], fmt=charts.megabytes)
    assert none.svg == "" and none.summary == "no samples yet"


def test_titles_are_escaped() -> None:
    chart = charts.line_chart("<b>", [(0.0, 1.0)], fmt=str)
    assert "<b>" not in chart.svg and "&lt;b&gt;" in chart.svg


def test_health_in_a_word() -> None:
    base = {"deployment": {"id": "d"}, "errors": [], "ready": False}
    assert health({**base, "deployment": None})[0] == "none"
    assert health(base)[0] == "deploying"
    assert health({**base, "ready": True})[0] == "ready"
    failed = {**base, "errors": [{"code": "X", "message": "no bot.py"}]}
    assert health(failed) == ("failed", "no bot.py")
