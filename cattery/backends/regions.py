"""Which of a cluster's nodes a deployment may run on: those of its region.

A node's region is its ``cattery-region`` label; a node without one belongs to the
platform's default region, so a cluster with no labels serves the default region as a
single machine does. A spec without a region runs anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from cattery.contract import REGION_LABEL
from cattery.errors import ServiceUnavailable

N = TypeVar("N")


class NoNodeInRegion(ServiceUnavailable):
    """The deployment's region has no live node to place an instance on."""

    code = "REGION_HAS_NO_NODES"
    default_message = "The agent's region has no node to run it on"

    def __init__(self, region: str) -> None:
        super().__init__(
            f"Region {region!r} has no live node to run this agent: join one with "
            f"`cattery node join` (a token from `pipecat cloud regions enroll-token {region}`)"
        )
        self.region = region


def node_region(labels: Mapping[str, str] | None, default_region: str) -> str:
    """The region a node with these Ray labels belongs to."""
    return (labels or {}).get(REGION_LABEL) or default_region


def nodes_in_region(
    nodes: Iterable[N],
    region: str | None,
    default_region: str,
    labels: Callable[[N], Mapping[str, str] | None],
) -> list[N]:
    """The nodes a spec of ``region`` may run on; raises ``NoNodeInRegion`` when none.
    ``labels`` reads a node's Ray labels (``ray.nodes()``'s ``"Labels"``)."""
    nodes = list(nodes)
    if region is None:
        return nodes
    fit = [n for n in nodes if node_region(labels(n), default_region) == region]
    if not fit:
        raise NoNodeInRegion(region)
    return fit
