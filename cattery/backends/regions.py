"""A cluster node's region, and the refusal when a deployment's region has no node.

A node's region is its ``cattery-region`` label; a node without one belongs to the
platform's default region, so a cluster with no labels serves the default region as a
single machine does.
"""

from __future__ import annotations

from collections.abc import Mapping

from cattery.contract import REGION_LABEL
from cattery.errors import ServiceUnavailable


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
