"""What every backend's instance handle shares: its status machine, the readiness probe, and
closing many handles at once without one failure stopping the rest; and, for a handle that
learns of its instance's exit as an event, the properties and checks around it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import aiohttp
from loguru import logger

from cattery.backends.base import (
    ALLOWED_TRANSITIONS,
    InstanceFailed,
    InstanceHandle,
    InstanceSpec,
    InstanceStatus,
)

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


class ExitEventHandle(HandleBase):
    """A handle told of its instance's exit (``_exited``, ``_exit_code``) by its backend,
    rather than waiting on a process of its own; the owner's ``on_closed`` is called once
    closed. ``ready`` keeps the status checks and leaves the waiting to ``_until_ready``."""

    def __init__(
        self,
        *,
        instance_id: str,
        spec: InstanceSpec,
        token: str,
        status: InstanceStatus = InstanceStatus.STARTING,
        on_closed: Callable[[Any], None] | None = None,
    ) -> None:
        self.id = instance_id
        self.spec = spec
        self._token = token
        self._status = status
        self._on_closed = on_closed
        self._exit_code: int | None = None
        self._exited = asyncio.Event()
        self._stop_requested = False

    @property
    def token(self) -> str:
        return self._token

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    def log_context(self) -> dict[str, str]:
        return {
            "instance_id": self.id,
            "agent": self.spec.agent_key,
            "deployment_id": self.spec.deployment_id,
            **self._placement(),
        }

    def _placement(self) -> dict[str, str]:
        """Where the instance runs, for the log context."""
        return {}

    async def ready(self, timeout: float) -> None:
        if self._status == InstanceStatus.READY:
            return
        if self._status != InstanceStatus.STARTING:
            raise InstanceFailed(f"instance {self.id} is {self._status}, not starting")
        await self._until_ready(timeout)
        if self._status == InstanceStatus.STARTING:
            self._set_status(InstanceStatus.READY)
        if self._status != InstanceStatus.READY:
            raise InstanceFailed(f"instance {self.id} is {self._status}")

    async def _until_ready(self, timeout: float) -> None:
        """Until the instance serves; raises ``InstanceFailed`` (or its timeout) if not."""
        raise NotImplementedError

    async def wait(self) -> int | None:
        await self._exited.wait()
        return self._exit_code

    def _settle_exit(self, clean: bool) -> None:
        """The instance has exited: stopped if asked to or ``clean``, else failed."""
        if self._status not in TERMINAL:
            stopped = self._stop_requested or clean
            self._set_status(InstanceStatus.STOPPED if stopped else InstanceStatus.FAILED)

    def _closed(self) -> None:
        """The end of ``_close``, however it went: stopped, and the owner told."""
        if self._status not in TERMINAL:
            self._set_status(InstanceStatus.STOPPED)
        if self._on_closed is not None:
            self._on_closed(self)


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
