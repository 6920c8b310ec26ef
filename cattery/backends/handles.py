"""What every backend's instance handle shares: its status machine, the readiness probe, and
closing many handles at once without one failure stopping the rest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from enum import Enum

import aiohttp
from loguru import logger

from cattery.backends.base import ALLOWED_TRANSITIONS, InstanceHandle, InstanceStatus

READY_POLL_SECONDS = 0.05
LIVEZ_TIMEOUT_SECONDS = 2.0
TERMINAL = frozenset({InstanceStatus.STOPPED, InstanceStatus.FAILED})


class StatusMachine:
    """A handle's status, changed only along ``ALLOWED_TRANSITIONS``."""

    id: str
    _status: InstanceStatus

    @property
    def status(self) -> InstanceStatus:
        return self._status

    def _set_status(self, new: InstanceStatus) -> None:
        if new == self._status:
            return
        if new not in ALLOWED_TRANSITIONS[self._status]:
            raise RuntimeError(f"instance {self.id}: {self._status} -> {new} is not allowed")
        self._status = new


class HandleBase(StatusMachine):
    """A handle's shared lifecycle: ``aclose`` runs ``_close`` once, however many call it,
    and a caller cancelled meanwhile doesn't cut the close short."""

    _close_task: asyncio.Task[None] | None = None

    async def wait(self) -> int | None:
        raise NotImplementedError

    async def _close(self, grace: float) -> None:
        raise NotImplementedError

    async def aclose(self, grace: float = 5.0) -> None:
        if self._close_task is None:
            self._close_task = asyncio.create_task(self._close(grace), name=f"close {self.id}")
        await asyncio.shield(self._close_task)

    def _mark_draining(self) -> None:
        if self._status == InstanceStatus.READY:
            self._set_status(InstanceStatus.DRAINING)

    async def _wait_exit(self, timeout: float) -> bool:
        """Whether the instance exited within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Probe(Enum):
    ANSWERED = "answered"
    EXITED = "exited"
    TIMED_OUT = "timed out"


async def probe_livez(
    address: str,
    timeout: float,
    *,
    exited: Callable[[], bool],
    accept: Callable[[int], bool] = lambda status: status == 200,
) -> Probe:
    """Poll ``address/livez`` until an accepted answer, the instance's exit, or ``timeout``.

    A local instance's socket is listening before its process starts, so the first probe
    usually waits in its backlog and is answered as soon as the instance serves. aiohttp's
    client: a new one per probe costs far less than httpx's, on the path of every start
    on an empty pool.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as client:
        while True:
            if exited():
                return Probe.EXITED
            budget = min(LIVEZ_TIMEOUT_SECONDS, max(0.05, deadline - loop.time()))
            try:
                async with client.get(
                    address + "/livez", timeout=aiohttp.ClientTimeout(total=budget)
                ) as resp:
                    if accept(resp.status):
                        return Probe.ANSWERED
            except (aiohttp.ClientError, TimeoutError):
                pass
            if loop.time() >= deadline:
                return Probe.TIMED_OUT
            await asyncio.sleep(READY_POLL_SECONDS)


async def close_all(handles: Iterable[InstanceHandle], grace: float | None = None) -> None:
    """Close every handle at once; a failure is logged and the others still close."""
    handles = list(handles)
    closing = (h.aclose() if grace is None else h.aclose(grace) for h in handles)
    results = await asyncio.gather(*closing, return_exceptions=True)
    for handle, result in zip(handles, results, strict=True):
        if isinstance(result, BaseException):
            logger.opt(exception=result).error(f"Closing {handle.id} failed: {result!r}")
