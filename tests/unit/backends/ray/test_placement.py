"""Placement on a cluster: the least loaded usable node with room, within a spec's labels."""

from __future__ import annotations

from cattery.backends.profiles import PROFILES
from cattery.backends.ray.placement import NodeView, choose

ONE_X = PROFILES["agent-1x"]
GIB = 2**30


def node(name: str, cpus: float = 2.0, memory: int = 4 * GIB, region: str = "local") -> NodeView:
    return NodeView(
        node_id=name, ip=name, region=region, cpus=cpus, memory_bytes=memory, last_seen=1.0
    )


def test_starts_spread_over_nodes() -> None:
    nodes = [node("a"), node("b"), node("c")]
    placed = []
    for _ in range(6):
        chosen = choose(nodes, ONE_X, "org/bot", None)
        assert chosen is not None
        chosen.reserve("org/bot", ONE_X)
        placed.append(chosen.node_id)
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c"]


def test_a_full_cluster_has_no_node() -> None:
    nodes = [node("a", cpus=1.0)]
    for _ in range(2):
        chosen = choose(nodes, ONE_X, "org/bot", None)
        assert chosen is not None
        chosen.reserve("org/bot", ONE_X)
    assert choose(nodes, ONE_X, "org/bot", None) is None


def test_memory_counts_as_much_as_cpu() -> None:
    assert choose([node("a", cpus=8.0, memory=GIB // 2)], ONE_X, "org/bot", None) is None


def test_a_region_keeps_to_its_nodes() -> None:
    nodes = [node("a", region="us"), node("b", region="eu")]
    for _ in range(3):
        chosen = choose(nodes, ONE_X, "org/bot", "eu")
        assert chosen is not None and chosen.node_id == "b"
        chosen.reserve("org/bot", ONE_X)
    assert choose(nodes, ONE_X, "org/bot", "ap") is None


def test_fenced_draining_and_silent_nodes_take_no_starts() -> None:
    fenced, draining, silent = node("a"), node("b"), node("c")
    fenced.fenced, draining.draining, silent.last_seen = True, True, None
    assert choose([fenced, draining, silent], ONE_X, "org/bot", None) is None


def test_a_busy_node_is_avoided() -> None:
    idle, busy = node("a"), node("b")
    busy.cpu_load = 0.9
    assert choose([busy, idle], ONE_X, "org/bot", None) is idle


def test_released_room_is_reused() -> None:
    only = node("a", cpus=0.5)
    only.reserve("org/bot", ONE_X)
    assert choose([only], ONE_X, "org/bot", None) is None
    only.release("org/bot", ONE_X)
    assert choose([only], ONE_X, "org/bot", None) is only
    assert not only.instances
