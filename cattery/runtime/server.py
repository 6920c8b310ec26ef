"""Serving the runtime with uvicorn, with the draining shutdown the image promises.

First SIGTERM or SIGINT: refuse new sessions (503), let running ones finish for at most
``SHUTDOWN_TIMEOUT`` seconds, cut off the rest, exit 0. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI
from loguru import logger

from cattery.runtime.sessions import SessionRunner

GRACEFUL_CLOSE_SECONDS = 10


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, runner: SessionRunner, shutdown_timeout: float):
        super().__init__(config)
        self._runner = runner
        self._shutdown_timeout = shutdown_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

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


def serve(
    app: FastAPI,
    runner: SessionRunner,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    fd: int | None = None,
) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        fd=fd,
        log_config=None,
        access_log=True,
        lifespan="on",
        ws="websockets-sansio",
        timeout_graceful_shutdown=GRACEFUL_CLOSE_SECONDS,
    )
    server = DrainingServer(config, runner, shutdown_timeout)
    server.run()
