"""A pool's settings and what it hands out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cattery.backends.base import InstanceHandle


@dataclass(frozen=True)
class PoolOptions:
    """An agent's scaling settings (``minAgents``, ``maxAgents``) and our timings."""

    min_agents: int = 0
    max_agents: int = 50
    #: how long an idle instance beyond ``min_agents`` is kept before it is retired
    cooldown_seconds: float = 300.0
    #: how long a new instance may take to answer ``/livez``
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.min_agents < 0 or self.max_agents < 0:
            raise ValueError("min_agents and max_agents must not be negative")
        if self.cooldown_seconds < 0 or self.start_timeout <= 0:
            raise ValueError("cooldown_seconds must be >= 0 and start_timeout > 0")


@dataclass
class PoolCounts:
    """Running totals a pool keeps for the metrics: never reset while the pool lives."""

    #: acquires refused because ``max_agents`` instances were in use
    capacity_refusals: int = 0
    #: instances that failed to start
    start_failures: int = 0
    #: warm instances found dead while idle
    idle_deaths: int = 0


@dataclass(frozen=True)
class Lease:
    """One instance, handed to one session; give it back with ``Pool.release(handle)``."""

    handle: InstanceHandle
    #: True when the session had to wait for an instance to start
    cold_start: bool


@dataclass(frozen=True)
class PoolStats:
    idle: int
    starting: int
    busy: int
    #: starts queued for an instance to free (an agent's ``startQueueSeconds``)
    waiting: int = 0

    @property
    def total(self) -> int:
        return self.idle + self.starting + self.busy

    def as_dict(self) -> dict[str, int]:
        counts = {"idle": self.idle, "starting": self.starting, "busy": self.busy}
        return {**counts, "total": self.total, "waiting": self.waiting}


class InstanceEvents(Protocol):
    """Told, under the pool's lock (so without awaiting), when an instance starts waiting
    for a session and when the pool lets one go: the dispatcher opens its connection to a
    warm instance ahead of the session, and closes it with the instance."""

    def instance_idle(self, handle: InstanceHandle) -> None: ...

    def instance_gone(self, handle: InstanceHandle) -> None: ...


class EveryListener:
    """Tells each of ``listeners``, in order, what the pools tell."""

    def __init__(self, *listeners: InstanceEvents) -> None:
        self._listeners = listeners

    def instance_idle(self, handle: InstanceHandle) -> None:
        for listener in self._listeners:
            listener.instance_idle(handle)

    def instance_gone(self, handle: InstanceHandle) -> None:
        for listener in self._listeners:
            listener.instance_gone(handle)


class NoEvents:
    """Events nobody listens to: a pool without a dispatcher, a dispatcher keeping nothing."""

    def instance_idle(self, handle: InstanceHandle) -> None:
        pass

    def instance_gone(self, handle: InstanceHandle) -> None:
        pass
