"""An in-memory backend for unit tests (pools, the deployer, the supervisor, recovery):
no sockets, no processes.

Each handle becomes ready when its gate opens (at once with ``auto_ready``); tests can
make starts fail, hold them, or let an instance die.
"""

from __future__ import annotations

import asyncio
import itertools

from cattery.backends.base import (
    ALLOWED_TRANSITIONS,
    Adoption,
    InstanceFailed,
    InstanceHandle,
    InstanceSpec,
    InstanceStatus,
    LineSink,
    Locator,
)

_ids = itertools.count(1)


class FakeHandle:
    def __init__(self, spec: InstanceSpec, *, fail: bool = False) -> None:
        self.id = f"inst_fake{next(_ids)}"
        self.spec = spec
        self.fail = fail
        self.gate = asyncio.Event()
        self.closed = False
        self.close_calls = 0
        self._status = InstanceStatus.STARTING
        self._exited = asyncio.Event()

    @property
    def status(self) -> InstanceStatus:
        return self._status

    @property
    def address(self) -> str:
        return f"http://fake/{self.id}"

    @property
    def token(self) -> str:
        return "token-" + self.id

    @property
    def pid(self) -> int | None:
        return None

    def _set(self, new: InstanceStatus) -> None:
        if new != self._status and self._status in (InstanceStatus.STOPPED, InstanceStatus.FAILED):
            return
        if new != self._status:
            assert new in ALLOWED_TRANSITIONS[self._status], f"{self._status} -> {new}"
            self._status = new

    async def ready(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.gate.wait(), timeout)
        except TimeoutError:
            self._set(InstanceStatus.FAILED)
            raise InstanceFailed(f"{self.id} timed out") from None
        if self.fail or self._exited.is_set():
            self._set(InstanceStatus.FAILED)
            raise InstanceFailed(f"{self.id} failed on purpose")
        self._set(InstanceStatus.READY)

    async def drain(self, timeout: float) -> None:
        if self._status == InstanceStatus.READY:
            self._set(InstanceStatus.DRAINING)

    async def aclose(self, grace: float = 5.0) -> None:
        self.close_calls += 1
        self.closed = True
        self._set(InstanceStatus.STOPPED)
        self._exited.set()

    def kill(self) -> None:
        self.closed = True
        self._set(InstanceStatus.STOPPED)
        self._exited.set()

    def die(self) -> None:
        """The instance crashes on its own."""
        self._set(InstanceStatus.FAILED)
        self._exited.set()

    async def wait(self) -> int | None:
        await self._exited.wait()
        return 0

    def log_context(self) -> dict[str, str]:
        return {"instance_id": self.id, "agent": self.spec.agent_key}


class FakeBackend:
    """Records every handle it makes; ``open`` ones are those not yet closed."""

    def __init__(self, *, auto_ready: bool = True) -> None:
        self.auto_ready = auto_ready
        self.fail_starts = False
        #: raised by ``spawn`` itself (a backend refusing to place, e.g. no node fits)
        self.spawn_error: Exception | None = None
        self._made: list[FakeHandle] = []
        self.peak_open = 0

    async def start(self) -> None:
        pass

    async def spawn(self, spec: InstanceSpec) -> FakeHandle:
        await asyncio.sleep(0)  # a real backend yields here too
        if self.spawn_error is not None:
            raise self.spawn_error
        handle = FakeHandle(spec, fail=self.fail_starts)
        if self.auto_ready:
            handle.gate.set()
        self._made.append(handle)
        self.peak_open = max(self.peak_open, len(self.open))
        return handle

    @property
    def handles(self) -> list[FakeHandle]:
        """Every handle it made, closed ones too."""
        return self._made

    @property
    def made(self) -> list[FakeHandle]:
        return self._made

    @property
    def open(self) -> list[FakeHandle]:
        return [h for h in self._made if not h.closed]

    def open_gates(self) -> None:
        for handle in self._made:
            handle.gate.set()

    async def aclose(self) -> None:
        for handle in self.open:
            await handle.aclose()


class AdoptingFakeBackend(FakeBackend):
    """The fake backend whose instances outlive a control plane (``Adopting``).

    ``handles`` are the instances it owns now. ``let_go()`` is a control plane killed: its
    instances run on, owned by nobody, until a later one ``adopt``-s them. ``output`` is
    what each instance printed (its stored offset is a count of lines), ``line_sink`` where
    a gone instance's unread lines go when it is adopted.
    """

    def __init__(self, *, auto_ready: bool = True) -> None:
        super().__init__(auto_ready=auto_ready)
        self.running: dict[str, FakeHandle] = {}
        self.owned: dict[str, FakeHandle] = {}
        self.output: dict[str, list[str]] = {}
        self.line_sink: LineSink | None = None

    async def spawn(self, spec: InstanceSpec) -> FakeHandle:
        handle = await super().spawn(spec)
        self.running[handle.id] = self.owned[handle.id] = handle
        return handle

    @property
    def handles(self) -> list[FakeHandle]:
        """The instances it owns now (not closed)."""
        return [h for h in self.owned.values() if not h.closed]

    def let_go(self) -> None:
        self.owned.clear()

    def print(self, handle: FakeHandle, line: str) -> None:
        """The instance writes a line (read later if nobody owns it now)."""
        self.output.setdefault(handle.id, []).append(line)
        if handle.id in self.owned and self.line_sink is not None:
            self.line_sink(handle.id, line)

    def locate(self, handle: InstanceHandle) -> Locator | None:
        if handle.id not in self.owned:
            return None
        lines = len(self.output.get(handle.id, []))
        return Locator(address=handle.address, token=handle.token, log=handle.id, log_offset=lines)

    async def adopt(self, instance_id: str, spec: InstanceSpec, locator: Locator) -> Adoption:
        handle = self.running.get(instance_id)
        if handle is not None and not handle.closed and handle.status != InstanceStatus.FAILED:
            self.owned[instance_id] = handle
            return Adoption(handle)
        unread = tuple(self.output.get(instance_id, [])[locator.log_offset :])
        for line in unread:
            if self.line_sink is not None:
                self.line_sink(instance_id, line)
        return Adoption(None, unread)

    async def last_lines(self, instance_id: str) -> tuple[str, ...]:
        return tuple(self.output.get(instance_id, []))
