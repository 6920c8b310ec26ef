"""The seam between pools and whatever makes instances (processes, forks, containers, actors).

A pool owns handles; a handle owns its process. Only the owner signals a pid.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

from cattery.backends.profiles import Limits


class InstanceStatus(StrEnum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


#: transitions each status may take; anything else is a bug
ALLOWED_TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    InstanceStatus.STARTING: frozenset(
        {InstanceStatus.READY, InstanceStatus.FAILED, InstanceStatus.STOPPED}
    ),
    InstanceStatus.READY: frozenset(
        {InstanceStatus.DRAINING, InstanceStatus.STOPPED, InstanceStatus.FAILED}
    ),
    InstanceStatus.DRAINING: frozenset({InstanceStatus.STOPPED, InstanceStatus.FAILED}),
    InstanceStatus.STOPPED: frozenset(),
    InstanceStatus.FAILED: frozenset(),
}

#: called with (instance_id, line) for every line an instance prints
LineSink = Callable[[str, str], None]
#: called with (instance_id, cpu_millicores, memory_bytes) for every resource sample
MetricsSink = Callable[[str, float, int], None]


@dataclass(frozen=True)
class PullAuth:
    """Credentials for pulling an agent's image from a private registry."""

    username: str
    password: str = field(repr=False)
    registry: str | None = None


@dataclass(frozen=True)
class InstanceSpec:
    """What to run: one agent deployment's bot, with its environment."""

    agent_key: str  # "<org>/<agent>", unique across the platform
    deployment_id: str
    image: str  # local backend: the folder holding bot.py; container backend: an image ref
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # secrets included
    python: Path | None = None  # the agent's own interpreter, or None for cattery's
    profile: str = "agent-1x"
    #: the CPU and memory the profile (or the deploy's own ``resources``) allows; every
    #: backend enforces them. None: the built-in ``profile``'s
    limits: Limits | None = None
    #: which backend runs it: "local" (a folder holding bot.py) or "container" (an image)
    backend: str = "local"
    pull_auth: PullAuth | None = field(default=None, repr=False)
    #: container backend: a folder holding bot.py, mounted at /app of ``image``
    mount: str | None = None
    #: the deployment's region: a cluster places it only on that region's nodes; a
    #: single machine is every region at once
    region: str | None = None


@runtime_checkable
class InstanceHandle(Protocol):
    """One running instance. Close is idempotent and always ends in a terminal status."""

    id: str
    spec: InstanceSpec

    @property
    def status(self) -> InstanceStatus: ...

    @property
    def address(self) -> str:
        """Base URL of the instance's runtime, e.g. ``http://127.0.0.1:40123``."""
        ...

    @property
    def token(self) -> str:
        """Value of the ``X-Cattery-Instance-Token`` header the instance requires."""
        ...

    @property
    def pid(self) -> int | None: ...

    async def ready(self, timeout: float) -> None:
        """Return once the runtime answers; raise ``InstanceFailed`` if it dies or times out."""
        ...

    async def drain(self, timeout: float) -> None:
        """SIGTERM: the runtime refuses new sessions and finishes the running one."""
        ...

    async def aclose(self, grace: float = 5.0) -> None:
        """Graceful stop, then kill after ``grace`` seconds."""
        ...

    def kill(self) -> None: ...

    async def wait(self) -> int | None:
        """Wait for the instance to exit; its exit code when known."""
        ...

    def log_context(self) -> dict[str, str]: ...


class InstanceFailed(Exception):
    """An instance died or never became ready; ``instance_id`` names it once it existed
    (its output is that instance's log lines), and ``output`` holds its last lines."""

    def __init__(self, message: str, *, instance_id: str | None = None, output: str = "") -> None:
        super().__init__(message)
        self.instance_id = instance_id
        self.output = output


class InstanceStartTimeout(InstanceFailed):
    """An instance did not become ready within its start timeout (and was stopped)."""


class Backend(Protocol):
    async def start(self) -> None: ...

    async def spawn(self, spec: InstanceSpec) -> InstanceHandle: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LogReading(Protocol):
    """A handle whose lines are read from a log some time after the instance writes them
    (the local backend's file tail). Optional: ``read_log`` hands everything written so far
    to the sink, so a session's end is recorded after the lines that led to it (a runtime
    logs a traceback, then answers ``POST /bot`` with its end state)."""

    async def read_log(self) -> None: ...


@runtime_checkable
class Fencing(Protocol):
    """A handle whose node may stop answering (a cluster node that hangs). Optional: while
    ``fenced`` names why, nothing is sent to the instance (it may still run, and exits
    itself once it loses its lease) and its session is on its way to an end state."""

    @property
    def fenced(self) -> str | None: ...


@runtime_checkable
class Retiring(Protocol):
    """A backend that keeps something per agent beyond its instances (the local backend's
    forking parent). Optional: an agent's pool calls it once the agent is gone."""

    async def retire(self, agent_key: str) -> None:
        """Let go of what is kept for ``agent_key``; its instances are closed already."""
        ...


@runtime_checkable
class Preparing(Protocol):
    """A backend with work to do once per spec, ahead of its first instance (the local
    backend loads the spec's forking parent). Optional: pools call it when it is there."""

    async def prepare(self, spec: InstanceSpec) -> None:
        """Get ready to spawn ``spec`` fast; never raises for a spec that can't be sped up."""
        ...


@dataclass(frozen=True)
class Locator:
    """Where a running instance is, as the store keeps it for a later control plane. Only
    the backend that made the instance reads it back (``Adopting.adopt``); every field but
    ``address`` and ``token`` means what that backend makes of it."""

    address: str
    token: str = field(repr=False)
    #: the instance's process, and when it started (epoch seconds): a pid gets reused
    pid: int | None = None
    started_at: float | None = None
    #: where its output goes (the local backend: a file), and how much of it is stored
    log: str | None = None
    log_offset: int = 0


@dataclass(frozen=True)
class Adoption:
    """What adopting found: the handle of an instance that still runs (owned by the backend
    again), or, for one that is gone, the last lines it wrote after the stored offset
    (handed to the backend's line sink already, so its session keeps them)."""

    handle: InstanceHandle | None
    last_lines: tuple[str, ...] = ()


@runtime_checkable
class Adopting(Protocol):
    """A backend whose instances outlive the control plane that started them. Optional.

    The control plane stores ``locate(handle)`` for each of ``handles`` (under the spec's
    ``backend`` name) and keeps it in step; a control plane started after a crash gives
    each stored locator back to the backend of that name with ``adopt``, and reads how a
    session ended from ``last_lines``. Instances of a backend without it are not stored:
    after a restart their sessions end as ``terminated``.
    """

    @property
    def handles(self) -> Sequence[InstanceHandle]:
        """Every instance the backend owns now."""
        ...

    def locate(self, handle: InstanceHandle) -> Locator | None:
        """Where ``handle`` runs, to store; None if it could not be found again."""
        ...

    async def adopt(self, instance_id: str, spec: InstanceSpec, locator: Locator) -> Adoption:
        """Own again the instance ``locator`` names (``spec`` as stored: no secrets). An
        empty ``locator.token`` means nothing can talk to it: adopt it to be closed."""
        ...

    async def last_lines(self, instance_id: str) -> tuple[str, ...]:
        """The last lines a gone instance wrote, if the backend still has them (a session
        whose instance record went before its end was recorded); else ``()``."""
        ...
