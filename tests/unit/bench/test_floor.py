"""The start targets as multiples of the dev runner's p50, measured in the same run."""

from __future__ import annotations

import math

from bench.floor import floor_targets


def test_each_target_is_its_figure_over_the_floors_p50() -> None:
    floor = [0.001] * 9 + [0.5]  # one slow dev-runner start leaves its p50 alone
    warm = [0.003] * 90 + [0.020] * 10
    cold = [0.025] * 10
    floors = {"warm": floor, "cold": [0.001]}
    found = {t.name: t for t in floor_targets(floors, {"warm": warm, "cold": cold})}
    assert math.isclose(found["warm start p50"].times, 3.0)
    assert found["warm start p50"].met
    p99 = found["warm start p99"]
    assert p99.times > 12 and not p99.met and "NOT met" in p99.verdict()
    assert math.isclose(found["empty-pool (forked) start p50"].times, 25.0)
    assert not found["empty-pool (forked) start p50"].met


def test_each_series_is_held_against_its_own_floor() -> None:
    floors = {"warm": [0.002], "cold": [0.001]}  # the machine was busier for the warm ones
    found = {t.name: t for t in floor_targets(floors, {"warm": [0.006], "cold": [0.006]})}
    assert math.isclose(found["warm start p50"].times, 3.0)
    assert math.isclose(found["empty-pool (forked) start p50"].times, 6.0)


def test_a_missing_series_or_floor_is_never_met() -> None:
    assert not any(t.met for t in floor_targets({}, {"warm": [0.001], "cold": [0.001]}))
    assert not any(t.met for t in floor_targets({"warm": [0.001], "cold": [0.001]}, {}))
