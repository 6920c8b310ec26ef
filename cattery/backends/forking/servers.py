"""Every forking parent of one backend: one shared parent per interpreter, one parent per
agent formed from it on the agent's first spawn (or deploy), retired once idle.

``ForkServers`` is owned by a ``LocalBackend`` and owns its parents and the *lifeline*: a
pipe whose write end only this process holds. Every parent, and so every forked child,
inherits the read end; it reads end of file once the backend's process is gone, and an
idle forked instance then exits (``--parent-pid``'s promise, for children whose parent is
not the backend). A parent dying closes nothing of it, so idle instances outlive their
parent too.

Each agent parent that has forked more than one instance (its first is usually a
deploy's) keeps one spare child, forked ahead (shortly after one of its instances is
ready, so the fork slows no start down): the next spawn gets it at once. A spare is a
sleeping copy of its parent, in a cgroup of its own, that exits with its parent. An agent
deployed and never started has none: idle agents cost only their parents.

A spawn for a new spec replaces the agent's parent. A parent that died is formed again on
the next spawn; one that could not load its bot (or started threads while importing)
marks its spec as not forkable, and that spec's instances are plain processes from then
on. A parent that has forked nothing, with no child of it running, for ``idle_seconds``
retires; the next spawn forms a new one from the shared parent (the bot's import again).
The shared parent of an agent's own venv retires too once no agent parent of it has run
for ``idle_seconds``; cattery's own interpreter keeps its shared parent.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from cattery.backends.base import InstanceSpec
from cattery.backends.forking.client import (
    DEFAULT_LOAD_TIMEOUT,
    ForkFailed,
    ForkServer,
    ParentLaunch,
    ParentUnavailable,
    SharedParent,
    SharedParentGone,
    spec_key,
)
from cattery.backends.walls.cgroups import Cgroup, ParentGroup
from cattery.tasks import OwnedTasks

#: told, once per spec, that its instances are plain processes and why
PlainProcessesSink = Callable[[InstanceSpec, str], None]
#: makes a child's cgroup by name, in its parent's subtree (None: no walls)
CgroupMaker = Callable[[ParentGroup | None, str], Cgroup | None]
DEFAULT_PARENT_IDLE_SECONDS = 600.0
#: the longest wait between two looks for idle parents
MAX_SWEEP_SECONDS = 30.0
#: how long after one of its instances is ready a parent forks its next spare: by then
#: that instance's first session is under way, and the fork (some 5 ms of a core) is
#: beside neither its start nor its dispatch (on two cores, either would wait for it)
SPARE_DELAY_SECONDS = 0.02


@dataclass(frozen=True)
class Forked:
    """A child a forking parent forked: its pid, its parent, its cgroup and whether it was
    born there (else the caller moves it in)."""

    pid: int
    server: ForkServer
    cgroup: Cgroup | None
    born_inside: bool
    #: have the parent fork its next spare child: call once this one is ready (soon after
    #: a fork, one beside a starting child would slow it down, on two cores by half)
    replenish: Callable[[], None] | None = None


class ForkServers:
    """The forking parents of one backend: shared ones by interpreter, agents' by key."""

    def __init__(
        self,
        log_dir: Path,
        shared_env: Mapping[str, str],
        *,
        idle_seconds: float = DEFAULT_PARENT_IDLE_SECONDS,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        on_plain_processes: PlainProcessesSink | None = None,
    ) -> None:
        self._log_dir = Path(log_dir)
        #: a shared parent's environment: the allow-listed part of ours, nobody's secrets
        self._shared_env = dict(shared_env)
        self.idle_seconds = idle_seconds
        self._load_timeout = load_timeout
        self.on_plain_processes = on_plain_processes
        self._shared: dict[str, SharedParent] = {}
        self._shared_locks: dict[str, asyncio.Lock] = {}
        #: when each shared parent last had an agent parent (``time.monotonic``)
        self._shared_used: dict[str, float] = {}
        self._servers: dict[str, ForkServer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: specs whose bot can't be forked, with the reason
        self._unforkable: dict[str, str] = {}
        self._lifeline_r, self._lifeline_w = os.pipe()
        self._retiring = OwnedTasks("forking parents")
        self._spares = OwnedTasks("spare children")
        self._sweeper = OwnedTasks("idle forking parents")
        self._closed = False

    def plain_processes_reason(self, spec: InstanceSpec) -> str | None:
        """Why ``spec``'s instances are plain processes; None while they are forked."""
        return self._unforkable.get(spec_key(spec))

    def parent(self, agent_key: str) -> ForkServer | None:
        """The agent's current parent, if one runs."""
        server = self._servers.get(agent_key)
        return server if server is not None and server.alive else None

    def shared(self, python: str) -> SharedParent | None:
        """The shared parent of ``python``, if one runs."""
        shared = self._shared.get(python)
        return shared if shared is not None and shared.alive else None

    async def fork(
        self,
        spec: InstanceSpec,
        launch: ParentLaunch,
        env: dict[str, str],
        sock: socket.socket,
        log_fd: int,
        *,
        ready_fd: int | None = None,
        make_cgroup: CgroupMaker | None = None,
        name: str = "",
    ) -> Forked | None:
        """A child of the agent's parent serving on ``sock``: the parent's spare child if
        it has one (forked ahead, in its own cgroup), else one forked now into the cgroup
        ``make_cgroup`` makes as ``name`` in its parent's subtree; a new spare is forked
        next. None when ``spec`` can't be forked (its bot does not load in a parent, or
        the fork failed), so the caller starts a plain process (and no cgroup made for the
        fork is left)."""
        if self._closed:
            raise RuntimeError("the forking parents are closed")
        key = spec_key(spec)
        for attempt in (1, 2):
            if key in self._unforkable:
                return None
            try:
                server = await self._server(spec, key, launch)
            except ParentUnavailable:
                return None
            group = server.group
            spare = server.take_spare()
            if spare is not None:
                cgroup, into = spare.cgroup, None
            else:
                cgroup = make_cgroup(group, name) if make_cgroup is not None else None
                into = cgroup if group is not None and group.forks_into else None
            try:
                pid, inside = await server.fork(
                    env, sock, log_fd, ready_fd=ready_fd, cgroup=into, spare=spare
                )
            except BaseException as exc:
                if cgroup is not None:  # its child (if any) was killed: gone in a moment
                    self._retiring.spawn(asyncio.to_thread(cgroup.kill_and_remove), "rm_task")
                if not isinstance(exc, ForkFailed):
                    raise
                if server.alive or attempt == 2:
                    logger.bind(agent=spec.agent_key).warning(
                        f"Forking parent could not fork ({exc}); starting a plain process"
                    )
                    return None
                continue  # the parent died under us: the next round forms a new one
            if into is not None:
                into.seal()  # born: nothing else may be moved in by its user
            server.children += 1
            replenish = None
            if server.children > 1:  # the first is a deploy's: its agent may never start
                replenish = functools.partial(
                    self._replenish, server, make_cgroup, SPARE_DELAY_SECONDS
                )
            return Forked(pid, server, cgroup, inside, replenish)
        return None

    def _replenish(
        self, server: ForkServer, make_cgroup: CgroupMaker | None, delay: float = 0.0
    ) -> None:
        """Have ``server`` fork its next spare child in ``delay`` seconds, unless it has
        one (or one comes)."""
        if self._closed or server.has_spare or server.sparing or not server.alive:
            return

        async def fork_spare() -> None:
            try:
                await asyncio.sleep(delay)
                name = f"spare_{uuid.uuid4().hex}"
                cgroup = make_cgroup(server.group, name) if make_cgroup is not None else None
                await server.make_spare(cgroup)
            except (ForkFailed, OSError) as exc:
                logger.debug(f"Forking parent {server.pid}: no spare child ({exc})")

        server.spare_task = self._spares.spawn(fork_spare(), "spare_task")

    async def prepare(self, spec: InstanceSpec, launch: ParentLaunch) -> None:
        """Form the parent of ``spec`` now (a deploy), so its first instance is a fork at
        once (its spare child comes once an instance of it is ready). A bot that can't
        load in a parent is marked as such, as on a spawn."""
        if self._closed:
            return
        key = spec_key(spec)
        if key in self._unforkable:
            return
        try:
            await self._server(spec, key, launch)
        except ParentUnavailable:
            pass  # logged by _server; its instances will be plain processes

    async def _server(self, spec: InstanceSpec, key: str, launch: ParentLaunch) -> ForkServer:
        agent_key = spec.agent_key
        lock = self._locks.setdefault(agent_key, asyncio.Lock())
        async with lock:
            current = self._servers.get(agent_key)
            if current is not None and current.key == key and current.alive:
                return current
            log = logger.bind(agent=agent_key)
            if current is not None:
                if current.key == key:
                    log.warning(f"Forking parent {current.pid} is gone; forming a new one")
                self._servers.pop(agent_key, None)
                self._retiring.spawn(current.aclose(), "retire_task")
            if key in self._unforkable:
                raise ParentUnavailable("marked unforkable")
            t0 = time.monotonic()
            try:
                server = await self._formed(launch, key)
            except ParentUnavailable as exc:
                self._unforkable[key] = str(exc)
                log.warning(
                    f"Forking parent: {exc}; this deployment's instances are plain processes "
                    f"(see {launch.log_path})"
                )
                if self.on_plain_processes is not None:
                    self.on_plain_processes(spec, str(exc))
                raise
            if self._closed:
                await server.aclose()
                raise ParentUnavailable("the backend is closing")
            self._servers[agent_key] = server
            self._start_sweeping()
            log.info(f"Forking parent {server.pid} loaded its bot in {time.monotonic() - t0:.2f} s")
            return server

    async def _formed(self, launch: ParentLaunch, key: str) -> ForkServer:
        """A parent for ``launch`` formed from its interpreter's shared parent, bot loaded
        (a second shared parent if the first dies meanwhile)."""
        for attempt in (1, 2):
            shared = await self._shared_parent(launch.python)
            server = ForkServer(key, launch)
            try:
                await server.start(shared, self._load_timeout)
            except SharedParentGone as exc:
                if attempt == 2:
                    raise ParentUnavailable("its shared parent died twice forming it") from exc
                continue
            except asyncio.CancelledError:
                self._retiring.spawn(server.aclose(), "retire_task")
                raise
            return server
        raise AssertionError("unreachable")

    async def _shared_parent(self, python: str) -> SharedParent:
        """The running shared parent of ``python``, started now if there is none."""
        lock = self._shared_locks.setdefault(python, asyncio.Lock())
        async with lock:
            current = self._shared.get(python)
            if current is not None and current.alive:
                self._shared_used[python] = time.monotonic()
                return current
            if current is not None:
                logger.warning(f"Shared parent {current.pid} of {python} is gone; starting one")
                self._shared.pop(python, None)
                self._retiring.spawn(current.aclose(), "retire_task")
            name = hashlib.sha256(python.encode()).hexdigest()[:12]
            shared = SharedParent(
                python, self._shared_env, self._log_dir / f"shared-{name}.log", self._lifeline_r
            )
            t0 = time.monotonic()
            await shared.start(self._load_timeout)
            if self._closed:
                await shared.aclose()
                raise ParentUnavailable("the backend is closing")
            self._shared[python] = shared
            self._shared_used[python] = time.monotonic()
            logger.info(
                f"Shared parent {shared.pid} of {python} imported the common stack in "
                f"{time.monotonic() - t0:.2f} s"
            )
            return shared

    # -- idle parents -------------------------------------------------------------------

    def _start_sweeping(self) -> None:
        if not len(self._sweeper) and not self._sweeper.closed:
            self._sweeper.spawn(self._sweep_task(), "sweep_task")

    async def _sweep_task(self) -> None:
        interval = max(0.05, min(self.idle_seconds / 4, MAX_SWEEP_SECONDS))
        while not self._closed:
            await asyncio.sleep(interval)
            await self.retire_idle()

    async def retire_idle(self, now: float | None = None) -> list[str]:
        """Retire every agent parent idle for ``idle_seconds`` (as of ``now``); the keys of
        the agents whose parent went."""
        retired = []
        for agent_key, server in list(self._servers.items()):
            if server.idle_for(time.monotonic() if now is None else now) < self.idle_seconds:
                continue
            async with self._locks.setdefault(agent_key, asyncio.Lock()):
                when = time.monotonic() if now is None else now
                if self._servers.get(agent_key) is not server:
                    continue
                if server.alive and server.idle_for(when) < self.idle_seconds:
                    continue  # it forked meanwhile
                self._servers.pop(agent_key, None)
                await server.aclose()
            retired.append(agent_key)
            logger.bind(agent=agent_key).info(
                f"Forking parent {server.pid} retired after {self.idle_seconds:g} s idle"
            )
        await self._retire_idle_shared(time.monotonic() if now is None else now)
        return retired

    async def _retire_idle_shared(self, now: float) -> None:
        """Stop the shared parent of each venv no agent parent has used for ``idle_seconds``."""
        for server in self._servers.values():
            self._shared_used[server.launch.python] = now
        for python, shared in list(self._shared.items()):
            if python == sys.executable:
                continue  # cattery's own: most agents' and the slowest to start again
            if now - self._shared_used.get(python, now) < self.idle_seconds:
                continue
            async with self._shared_locks.setdefault(python, asyncio.Lock()):
                if self._shared.get(python) is not shared:
                    continue
                if any(s.launch.python == python for s in self._servers.values()):
                    continue  # formed one meanwhile
                self._shared.pop(python, None)
                self._shared_used.pop(python, None)
                await shared.aclose()
            logger.info(f"Shared parent {shared.pid} of {python} retired: no agent uses it")

    async def retire(self, agent_key: str) -> None:
        """Stop the agent's parent (the agent is gone); its children are the handles'."""
        lock = self._locks.setdefault(agent_key, asyncio.Lock())
        async with lock:
            server = self._servers.pop(agent_key, None)
        self._locks.pop(agent_key, None)
        if server is not None:
            await server.aclose()

    async def aclose(self) -> None:
        """Stop every agent parent (their children are the handles' to close), then the
        shared parents, and drop the lifeline, so idle children still running exit on
        their own. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._sweeper.aclose()
        await self._spares.aclose()
        servers = list(self._servers.values())
        self._servers.clear()
        await asyncio.gather(*(server.aclose() for server in servers), return_exceptions=True)
        shared = list(self._shared.values())
        self._shared.clear()
        await asyncio.gather(*(parent.aclose() for parent in shared), return_exceptions=True)
        await self._retiring.wait_all()
        await self._retiring.aclose()
        for fd in (self._lifeline_r, self._lifeline_w):
            os.close(fd)
