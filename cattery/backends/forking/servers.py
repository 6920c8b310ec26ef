"""Every forking parent of one backend: one per agent, started on its first spawn.

``ForkServers`` is owned by a ``LocalBackend`` and owns its parents and the *lifeline*: a
pipe whose write end only this process holds. Every parent, and so every forked child,
inherits the read end; it reads end of file once the backend's process is gone, and an
idle forked instance then exits (``--parent-pid``'s promise, for children whose parent is
not the backend). A parent dying closes nothing of it, so idle instances outlive their
parent too.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

from loguru import logger

from cattery.backends.base import InstanceSpec
from cattery.backends.forking.client import (
    DEFAULT_LOAD_TIMEOUT,
    ForkFailed,
    ForkServer,
    ParentLaunch,
    ParentUnavailable,
    spec_key,
)
from cattery.tasks import OwnedTasks

#: told, once per spec, that its instances are plain processes and why
PlainProcessesSink = Callable[[InstanceSpec, str], None]


class ForkServers:
    """The forking parents of one backend, by agent key."""

    def __init__(
        self,
        load_timeout: float = DEFAULT_LOAD_TIMEOUT,
        on_plain_processes: PlainProcessesSink | None = None,
    ) -> None:
        self._load_timeout = load_timeout
        self.on_plain_processes = on_plain_processes
        self._servers: dict[str, ForkServer] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: specs whose bot can't be forked, with the reason
        self._unforkable: dict[str, str] = {}
        self._lifeline_r, self._lifeline_w = os.pipe()
        self._retiring = OwnedTasks("forking parents")
        self._closed = False

    def plain_processes_reason(self, spec: InstanceSpec) -> str | None:
        """Why ``spec``'s instances are plain processes; None while they are forked."""
        return self._unforkable.get(spec_key(spec))

    def parent(self, agent_key: str) -> ForkServer | None:
        """The agent's current parent, if one runs."""
        server = self._servers.get(agent_key)
        return server if server is not None and server.alive else None

    async def fork(
        self,
        spec: InstanceSpec,
        launch: ParentLaunch,
        env: dict[str, str],
        sock: socket.socket,
        log_fd: int,
    ) -> tuple[int, ForkServer] | None:
        """A child of the agent's parent serving on ``sock``: its pid and its parent. None
        when ``spec`` can't be forked (its bot does not load in a parent, or the fork
        failed), so the caller starts a plain process."""
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
            try:
                pid = await server.fork(env, sock, log_fd)
            except ForkFailed as exc:
                if server.alive or attempt == 2:
                    logger.bind(agent=spec.agent_key).warning(
                        f"Forking parent could not fork ({exc}); starting a plain process"
                    )
                    return None
                continue  # the parent died under us: the next round starts a new one
            return pid, server
        return None

    async def prepare(self, spec: InstanceSpec, launch: ParentLaunch) -> None:
        """Load the parent of ``spec`` now (a deploy), so its first instance is a fork.
        A bot that can't load in a parent is marked as such, as on a spawn."""
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
                    log.warning(f"Forking parent {current.pid} is gone; starting a new one")
                self._servers.pop(agent_key, None)
                self._retiring.spawn(current.aclose(), "retire_task")
            if key in self._unforkable:
                raise ParentUnavailable("marked unforkable")
            server = ForkServer(key, launch, self._lifeline_r)
            t0 = time.monotonic()
            try:
                await server.start(self._load_timeout)
            except asyncio.CancelledError:
                self._retiring.spawn(server.aclose(), "retire_task")
                raise
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
            log.info(f"Forking parent {server.pid} loaded its bot in {time.monotonic() - t0:.2f} s")
            return server

    async def retire(self, agent_key: str) -> None:
        """Stop the agent's parent (the agent is gone); its children are the handles'."""
        lock = self._locks.setdefault(agent_key, asyncio.Lock())
        async with lock:
            server = self._servers.pop(agent_key, None)
        self._locks.pop(agent_key, None)
        if server is not None:
            await server.aclose()

    async def aclose(self) -> None:
        """Stop every parent (their children are the handles' to close) and drop the
        lifeline, so idle children still running exit on their own. Idempotent."""
        if self._closed:
            return
        self._closed = True
        servers = list(self._servers.values())
        self._servers.clear()
        await asyncio.gather(*(server.aclose() for server in servers), return_exceptions=True)
        await self._retiring.wait_all()
        await self._retiring.aclose()
        for fd in (self._lifeline_r, self._lifeline_w):
            os.close(fd)
