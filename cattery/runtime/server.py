"""Serving the runtime with uvicorn, with the draining shutdown the image promises.

First SIGTERM or SIGINT: refuse new sessions (503), let running ones finish for at most
``SHUTDOWN_TIMEOUT`` seconds, cut off the rest, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import time
from types import FrameType

import uvicorn
from loguru import logger
from starlette.types import ASGIApp

from cattery.runtime.rehearsal import rehearse
from cattery.runtime.sessions import EndState, SessionRunner

GRACEFUL_CLOSE_SECONDS = 10


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runner: SessionRunner, shutdown_timeout: float):
        super().__init__(config)
        self._runner = runner
        self._shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self.parent_pid: int | None = None
        self.owner_fd: int | None = None
        self.lease: tuple[str, float] | None = None
        #: a pipe's write end: one byte once serving (a forked instance tells its owner)
        self.ready_fd: int | None = None
        #: a pooled instance rehearses its session's request once it serves (rehearsal.py)
        self.rehearses = False
        self.rehearsal: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.ready_fd is not None and self.started:
            fd, self.ready_fd = self.ready_fd, None
            try:
                os.write(fd, b"r")
            except OSError:
                pass  # the owner is gone; the owner pipe or the lease ends us
            finally:
                os.close(fd)
        if self.rehearses and self.started and self.servers and self.servers[0].sockets:
            self.rehearsal = asyncio.ensure_future(
                rehearse(self.servers[0].sockets[0], self._runner)  # type: ignore[arg-type]
            )

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        watchers = []
        if self.parent_pid is not None:
            watchers.append(asyncio.create_task(self.watch_parent(self.parent_pid)))
        elif self.owner_fd is not None:
            watchers.append(asyncio.create_task(self.watch_owner_pipe(self.owner_fd)))
        if self.lease is not None:
            watchers.append(asyncio.create_task(self.watch_lease(*self.lease)))
        try:
            await super().serve(sockets)
        finally:
            for watcher in watchers:
                watcher.cancel()
            if self.rehearsal is not None:
                self.rehearsal.cancel()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain_task is not None or self.should_exit:
            self.should_exit = True
            self.force_exit = self._drain_task is not None
            return
        logger.info(f"Received {signal.Signals(sig).name}; draining")
        self._runner.draining = True
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            await self._runner.drain(self._shutdown_timeout)
        finally:
            self.should_exit = True

    def exit_after_first_session(self) -> None:
        """One session per instance: stop serving once the first session has ended."""

        def ended(_: EndState) -> None:
            logger.info("Instance served its session; exiting")
            self._runner.draining = True
            self.should_exit = True

        self._runner.on_session_end(ended)

    async def watch_parent(self, parent_pid: int, interval: float = 1.0) -> None:
        """Exit when the owner is gone and no session is running (no idle orphans)."""
        while not self.should_exit:
            await asyncio.sleep(interval)
            if os.getppid() != parent_pid and self._runner.active == 0:
                logger.warning(f"Owner process {parent_pid} is gone and no session runs; exiting")
                self._runner.draining = True
                self.should_exit = True

    async def watch_owner_pipe(self, fd: int, interval: float = 1.0) -> None:
        """As ``watch_parent``, for an owner that is not our parent (a forked instance):
        ``fd`` reads end of file once every copy of the owner's write end is closed."""
        while not self.should_exit:
            await asyncio.sleep(interval)
            if select.select([fd], [], [], 0)[0] and self._runner.active == 0:
                logger.warning("Owner process is gone and no session runs; exiting")
                self._runner.draining = True
                self.should_exit = True

    async def watch_lease(self, path: str, seconds: float, interval: float = 0.5) -> None:
        """Exit, cutting off the running session, once ``path`` was not touched for
        ``seconds``: the owner that renews it (a cluster node's host) hung or is gone, the
        control plane has given this node's sessions up, and nothing may be served here."""
        try:
            os.stat(path)
        except OSError:
            logger.warning(f"Lease file {path} is not visible here; serving without a lease")
            return
        started = time.time()
        while not self.should_exit:
            await asyncio.sleep(interval)
            try:
                touched = os.stat(path).st_mtime
            except OSError:
                touched = 0.0
            if time.time() - max(touched, started) > seconds:
                logger.warning(f"Lost its lease (not renewed for {seconds:g} s); exiting")
                self._runner.draining = True
                await self._runner.drain(0)
                self.should_exit = True
                return


def make_config(app: ASGIApp, *, host: str, port: int, lifespan: str = "on") -> uvicorn.Config:
    """uvicorn's settings for ``app``, loaded (the app wrapped, its protocols picked): a
    forking parent loads them once for all its children.

    A connection that has not sent a request yet is never closed by uvicorn (its
    keep-alive timeout starts only after a response): the control plane opens its
    connection to a warm instance ahead of the session and relies on that."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=True,
        lifespan=lifespan,
        ws="websockets-sansio",
        timeout_graceful_shutdown=GRACEFUL_CLOSE_SECONDS,
    )
    config.load()
    return config


def serve(
    config: uvicorn.Config,
    runner: SessionRunner,
    *,
    shutdown_timeout: float,
    fd: int | None = None,
    one_session: bool = False,
    parent_pid: int | None = None,
    owner_fd: int | None = None,
    ready_fd: int | None = None,
    lease: tuple[str, float] | None = None,
    rehearses: bool = False,
) -> None:
    # An inherited socket is opened here rather than by uvicorn, which labels it AF_UNIX:
    # asyncio then leaves Nagle's algorithm on for every connection (TCP_NODELAY is only
    # set on sockets it knows to be TCP), and a response written in two parts waits for
    # the peer's delayed ACK (~40 ms).
    sockets = [socket.socket(fileno=fd)] if fd is not None else None
    server = DrainingServer(config, runner, shutdown_timeout)
    if one_session:
        server.exit_after_first_session()
    server.parent_pid = parent_pid
    server.owner_fd = owner_fd
    server.ready_fd = ready_fd
    server.lease = lease
    server.rehearses = rehearses
    server.run(sockets=sockets)
