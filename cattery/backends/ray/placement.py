"""Which node a new instance goes to: the usable node of its region with room that is
least loaded.

Pure: it sees ``NodeView``s (what node hosts last reported, what cattery has placed) and
answers one of them, or None when no node fits (the start is refused as at capacity).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cattery.backends.profiles import Limits

#: a node's score weighs: its reserved share, its measured CPU, and this agent's instances
RESERVED_WEIGHT, CPU_WEIGHT, SAME_AGENT_WEIGHT = 1.0, 0.5, 0.25


@dataclass
class NodeView:
    """One Ray node, as the control plane sees it."""

    node_id: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    #: the region it serves: its ``cattery-region`` label, else the default region
    region: str = "local"
    #: what the node offers (Ray's declared ``CPU`` and ``memory`` resources)
    cpus: float = 0.0
    memory_bytes: int = 0
    #: what cattery's instances there may use, summed over their profiles
    reserved_cpus: float = 0.0
    reserved_memory: int = 0
    #: the node's measured CPU use (0..1) and available memory, from its last report
    cpu_load: float = 0.0
    memory_available: int = 0
    #: instances there by agent key (running and warm)
    instances: Counter[str] = field(default_factory=Counter)
    #: monotonic time of the last report answered; None: never
    last_seen: float | None = None
    #: no new starts: it missed its heartbeats (fenced) or leaves on purpose (draining)
    fenced: bool = False
    draining: bool = False

    @property
    def usable(self) -> bool:
        return self.last_seen is not None and not self.fenced and not self.draining

    def fits(self, limits: Limits) -> bool:
        return (
            self.reserved_cpus + limits.cpus <= self.cpus + 1e-9
            and self.reserved_memory + limits.memory_bytes <= self.memory_bytes
        )

    def reserve(self, agent_key: str, limits: Limits) -> None:
        self.reserved_cpus += limits.cpus
        self.reserved_memory += limits.memory_bytes
        self.instances[agent_key] += 1

    def release(self, agent_key: str, limits: Limits) -> None:
        self.reserved_cpus = max(0.0, self.reserved_cpus - limits.cpus)
        self.reserved_memory = max(0, self.reserved_memory - limits.memory_bytes)
        self.instances[agent_key] -= 1
        if self.instances[agent_key] <= 0:
            del self.instances[agent_key]

    def score(self, agent_key: str) -> float:
        """Lower is better."""
        share = max(
            self.reserved_cpus / self.cpus if self.cpus else 1.0,
            self.reserved_memory / self.memory_bytes if self.memory_bytes else 1.0,
        )
        total = max(1, sum(self.instances.values()))
        same = self.instances.get(agent_key, 0) / total
        return RESERVED_WEIGHT * share + CPU_WEIGHT * self.cpu_load + SAME_AGENT_WEIGHT * same


def serves(view: NodeView, region: str | None) -> bool:
    """Whether the node may run a deployment of ``region`` (None: of any)."""
    return region is None or view.region == region


def choose(
    nodes: Iterable[NodeView], limits: Limits, agent_key: str, region: str | None
) -> NodeView | None:
    """The best node for one instance of ``agent_key``, or None when none fits."""
    fitting = [n for n in nodes if n.usable and serves(n, region) and n.fits(limits)]
    if not fitting:
        return None
    return min(fitting, key=lambda n: (n.score(agent_key), n.node_id))
