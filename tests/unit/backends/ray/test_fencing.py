"""A node whose host stops answering is fenced once ``fence_seconds`` pass without an
answer (no new starts there), and let back in when it answers again."""

from __future__ import annotations

import time

from cattery.backends.profiles import PROFILES
from cattery.backends.ray.hosts import NodeHosts
from cattery.backends.ray.nodehost import NodeOptions
from cattery.backends.ray.placement import NodeView, choose


def test_a_silent_node_is_fenced_then_let_back() -> None:
    told: list[tuple[str, bool]] = []
    hosts = NodeHosts(
        NodeOptions(state_dir="/nonexistent"),
        "cattery-test",
        1.0,
        default_region="local",
        on_batch=lambda node_id, batch: None,
        on_gone=lambda node_id, reason: None,
        fence_seconds=3.0,
        on_fenced=lambda node_id, fenced: told.append((node_id, fenced)),
    )
    view = NodeView(node_id="n1", ip="10.0.0.6", cpus=4, memory_bytes=8 * 2**30)
    hosts.views["n1"] = view

    view.last_seen = time.monotonic() - 1.0
    hosts._fence_or_clear("n1", view)
    assert not view.fenced and told == []

    view.last_seen = time.monotonic() - 3.5
    hosts._fence_or_clear("n1", view)
    hosts._fence_or_clear("n1", view)  # told once
    assert view.fenced and told == [("n1", True)]
    assert choose([view], PROFILES["agent-1x"], "org/bot", None) is None

    view.last_seen = time.monotonic()
    hosts._fence_or_clear("n1", view)
    assert not view.fenced and told == [("n1", True), ("n1", False)]
    assert choose([view], PROFILES["agent-1x"], "org/bot", None) is view
