"""One agent's instances: warm ones waiting, starting ones, and busy ones serving a session.

An instance serves one session and is then discarded. The warm target is ``min_agents``;
besides, every session that ends is replaced by a fresh warm instance, as if the instance
had gone back to idle (Pipecat Cloud reuses it; we start a clean one). Idle instances
beyond ``min_agents`` are retired after ``cooldown_seconds``, so warm capacity follows
``max(min_agents, recent active sessions)``. Nothing ever exceeds ``max_agents``.

Bookkeeping happens under one lock and never awaits an instance; starting instances are
tasks, so an acquire never waits for a refill.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from loguru import logger

from cattery.backends.base import Backend, InstanceFailed, InstanceHandle, InstanceSpec, Preparing
from cattery.backends.base import InstanceStatus as Status
from cattery.errors import AtCapacity, CatteryError, ServiceUnavailable
from cattery.pools.options import (
    InstanceEvents,
    Lease,
    NoEvents,
    PoolCounts,
    PoolOptions,
    PoolStats,
)
from cattery.tasks import OwnedTasks

#: after this many failed starts in a row, refills wait up to ``MAX_BACKOFF_SECONDS``
BACKOFF_BASE_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
MAX_TICK_SECONDS = 1.0
MIN_TICK_SECONDS = 0.02
#: a warm acquire's replacement starts this much later: the session that took the instance
#: is recorded and dispatched first, not competing with a fork for the loop and the CPU
REFILL_DELAY_SECONDS = 0.03


@dataclass(eq=False)
class _Starting:
    """An instance being spawned and readied; ``claimed`` once an acquire waits for it."""

    spec: InstanceSpec
    generation: int
    claimed: bool = False
    future: asyncio.Future[InstanceHandle] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(eq=False)
class _Waiter:
    """A start waiting for an instance to free, in the pool's queue."""

    woken: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Idle:
    handle: InstanceHandle
    generation: int
    since: float = field(default_factory=time.monotonic)


class Pool:
    """The instances of one agent. Owned by a ``PoolManager``; owns its instances."""

    def __init__(
        self,
        key: str,
        spec: InstanceSpec,
        options: PoolOptions,
        backend: Backend,
        events: InstanceEvents | None = None,
    ) -> None:
        self.key = key
        self.spec = spec
        self.options = options
        self._backend = backend
        self._events = events or NoEvents()
        self._lock = asyncio.Lock()
        self._idle: list[_Idle] = []
        self._starting: list[_Starting] = []
        self._busy: dict[str, InstanceHandle] = {}
        #: starts waiting for an instance to free, first come first served
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._generation = 0
        self._failures = 0
        self._retry_at = 0.0
        self._started = False
        self._refill_pending = False
        self._closed = False
        self._tasks = OwnedTasks(f"pool {key}")  # maintenance and starting instances
        self._closing = OwnedTasks(f"pool {key} closes")  # awaited, never cancelled
        self.counts = PoolCounts()

    # -- public ----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin keeping the warm target, and return once the backend is prepared for the
        spec (its forking parent loaded). Idempotent; the first acquire calls it too."""
        async with self._lock:
            self._check_open()
            if self._started:
                return
            self._started = True
            self._tasks.spawn(self._maintain_task(), "maintain_task")
            self._refill_locked()
        await self._prepare(self.spec)

    async def acquire(self, wait: float = 0.0) -> Lease:
        """An instance for one session: warm if any, else one that is starting or new.

        When ``max_agents`` instances exist and none is free, the caller waits up to
        ``wait`` seconds in a first-come, first-served queue for one to free; then (or at
        once, with no ``wait``) ``AtCapacity``. A caller that is cancelled while it waits
        leaves the queue. Raises ``InstanceFailed`` when the instance started for this
        session fails.
        """
        await self.start()
        deadline = time.monotonic() + max(0.0, wait)
        waiter: _Waiter | None = None
        try:
            while True:
                async with self._lock:
                    self._check_open()
                    taken = self._take_locked() if self._may_take(waiter) else None
                    if taken is not None:
                        if waiter is not None:
                            self._waiters.remove(waiter)
                            waiter = None
                            self._wake_locked()  # there may be room for the next one too
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self.counts.capacity_refusals += 1
                        raise AtCapacity(
                            f"Agent {self.key} is at capacity: all {self.options.max_agents} "
                            "instances (maxAgents) are in use"
                        )
                    if waiter is None:
                        waiter = _Waiter()
                        self._waiters.append(waiter)
                    waiter.woken.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await waiter.woken.wait()
                except TimeoutError:
                    pass  # one last look, then the refusal
        finally:
            if waiter is not None:  # it gave up: refused, cancelled or the pool closed
                self._leave(waiter)
        if isinstance(taken, Lease):
            return taken
        return Lease(await self._wait_claimed(taken), cold_start=True)

    def _may_take(self, waiter: _Waiter | None) -> bool:
        """Whether the caller may take an instance now: nobody waits before it."""
        return not self._waiters or self._waiters[0] is waiter

    def _take_locked(self) -> Lease | _Starting | None:
        """A warm instance, or a starting one claimed (a new one when there is room)."""
        handle = self._take_idle_locked()
        if handle is not None:
            self._busy[handle.id] = handle
            self._refill_soon()
            return Lease(handle, cold_start=False)
        slot = next((s for s in self._starting if self._claimable(s)), None)
        if slot is None:
            if self._total() >= self.options.max_agents:
                return None
            slot = self._start_locked()
        slot.claimed = True
        self._refill_locked()
        return slot

    def _wake_locked(self) -> None:
        """Room may have freed: the first waiter looks again."""
        if self._waiters:
            self._waiters[0].woken.set()

    def _leave(self, waiter: _Waiter) -> None:
        first = bool(self._waiters) and self._waiters[0] is waiter
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        if first:
            self._wake_locked()  # whatever woke it is the next one's

    async def release(self, handle: InstanceHandle) -> None:
        """The session on ``handle`` is over: discard the instance, start its replacement."""
        async with self._lock:
            was_busy = self._busy.pop(handle.id, None) is not None
            self._idle = [e for e in self._idle if e.handle is not handle]
            self._close_later(handle)
            if self._closed:
                return
            if was_busy and self._total() < self.options.max_agents and not self._backing_off():
                self._start_locked()  # the cooldown replacement
            self._refill_locked()
            self._wake_locked()

    async def update(
        self, spec: InstanceSpec, options: PoolOptions, *, warm: InstanceHandle | None = None
    ) -> None:
        """A new deployment or new settings. Idle instances of an older spec are replaced
        (by ``warm``, a ready instance of ``spec``, first); busy ones keep serving their
        session."""
        async with self._lock:
            self._check_open()
            self.options = options
            if spec != self.spec:
                self.spec = spec
                self._generation += 1
                for entry in self._idle:
                    self._close_later(entry.handle)
                self._idle = []
            if warm is not None:
                self._add_idle_locked(warm, self._generation)
            self._failures, self._retry_at = 0, 0.0
            self._trim_locked()
            self._refill_locked()
            self._wake_locked()
        await self._prepare(spec)

    async def _prepare(self, spec: InstanceSpec) -> None:
        """The backend readies itself for ``spec`` (a deploy), so even a first start is
        fast; a backend without the hook, or one that fails at it, just spawns later."""
        if not isinstance(self._backend, Preparing):
            return
        try:
            await self._backend.prepare(spec)
        except Exception as exc:
            logger.bind(agent=self.key).warning(f"Preparing the backend failed: {exc!r}")

    def adopt_idle(self, handle: InstanceHandle) -> None:
        """A ready instance of the pool's spec, started elsewhere (a deploy's probe), is one
        of its idle instances; call before ``start``."""
        self._check_open()
        self._add_idle_locked(handle, self._generation)

    def adopt_busy(self, handle: InstanceHandle) -> None:
        """Count an instance reattached after a restart as busy; ``release`` it as usual."""
        self._check_open()
        self._busy[handle.id] = handle

    def stats(self) -> PoolStats:
        return PoolStats(
            idle=len(self._idle),
            starting=len(self._starting),
            busy=len(self._busy),
            waiting=len(self._waiters),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Stop every instance, idle and busy (their sessions end), and every task."""
        async with self._lock:
            if self._closed:
                handles: list[InstanceHandle] = []
            else:
                self._closed = True
                handles = [e.handle for e in self._idle] + list(self._busy.values())
                self._idle, self._busy = [], {}
            for waiter in self._waiters:  # each sees the pool closed
                waiter.woken.set()
        await self._tasks.aclose()  # a starting instance closes its own handle
        for handle in handles:
            self._close_later(handle)
        await self._closing.wait_all()  # left open: a late release still closes its handle

    # -- bookkeeping (under the lock) --------------------------------------------------

    def _total(self) -> int:
        return len(self._idle) + len(self._starting) + len(self._busy)

    def _claimable(self, slot: _Starting) -> bool:
        return not slot.claimed and slot.generation == self._generation

    def _warm(self) -> int:
        return len(self._idle) + sum(1 for s in self._starting if self._claimable(s))

    def _take_idle_locked(self) -> InstanceHandle | None:
        while self._idle:
            entry = self._idle.pop()  # the most recently idle: older ones may cool down
            if entry.handle.status == Status.READY:
                return entry.handle
            self._close_later(entry.handle)
        return None

    def _refill_locked(self) -> None:
        if self._closed or not self._started or self._backing_off():
            return
        need = self.options.min_agents - self._warm()
        room = self.options.max_agents - self._total()
        for _ in range(min(need, room)):
            self._start_locked()

    def _refill_soon(self) -> None:
        if not self._refill_pending:
            self._refill_pending = True
            self._tasks.spawn(self._deferred_refill_task(), "deferred_refill_task")

    def _start_locked(self) -> _Starting:
        slot = _Starting(self.spec, self._generation)
        self._starting.append(slot)
        self._tasks.spawn(self._start_task(slot), "start_task")
        return slot

    def _trim_locked(self) -> None:
        """Retire dead idle instances, cooled-down ones beyond ``min_agents``, and any
        idle ones over ``max_agents`` (after the cap was lowered)."""
        now = time.monotonic()
        alive = [e for e in self._idle if e.handle.status == Status.READY]
        for entry in self._idle:
            if entry.handle.status != Status.READY:
                self.counts.idle_deaths += 1
                logger.bind(agent=self.key, instance_id=entry.handle.id).warning(
                    f"Idle instance is {entry.handle.status}; replacing it"
                )
                self._close_later(entry.handle)
        self._idle = alive
        over_cap = self._total() - self.options.max_agents
        excess = self._warm() - self.options.min_agents
        for entry in sorted(self._idle, key=lambda e: e.since):
            cooled = now - entry.since >= self.options.cooldown_seconds
            if over_cap > 0 or (excess > 0 and cooled):
                self._idle.remove(entry)
                self._close_later(entry.handle)
                over_cap -= 1
                excess -= 1
        self._wake_locked()

    def _backing_off(self) -> bool:
        return time.monotonic() < self._retry_at

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailable(f"Agent {self.key} is shutting down")

    def _add_idle_locked(self, handle: InstanceHandle, generation: int) -> None:
        self._idle.append(_Idle(handle, generation))
        self._events.instance_idle(handle)

    def _close_later(self, handle: InstanceHandle) -> None:
        self._events.instance_gone(handle)
        self._closing.spawn(handle.aclose(), "close_task")

    # -- tasks -----------------------------------------------------------------------

    async def _wait_claimed(self, slot: _Starting) -> InstanceHandle:
        try:
            return await asyncio.shield(slot.future)
        except asyncio.CancelledError:
            self._unclaim(slot)  # the session is gone: the instance serves the next one
            raise

    def _unclaim(self, slot: _Starting) -> None:
        if not slot.future.done():
            slot.claimed = False
            return
        if slot.future.cancelled() or slot.future.exception() is not None:
            return
        handle = slot.future.result()
        if self._busy.pop(handle.id, None) is None:
            return
        if not self._closed and slot.generation == self._generation:
            self._add_idle_locked(handle, slot.generation)
            self._wake_locked()
        else:
            self._close_later(handle)

    async def _start_task(self, slot: _Starting) -> None:
        handle: InstanceHandle | None = None
        try:
            error: Exception | None = None
            try:
                handle = await self._backend.spawn(slot.spec)
                await handle.ready(self.options.start_timeout)
            except Exception as exc:
                error = exc
            async with self._lock:
                if error is None and handle is not None:
                    self._started_locked(slot, handle)
                else:
                    self._start_failed_locked(slot, error, handle)
        except asyncio.CancelledError:
            if slot in self._starting:  # cancelled before it was handed over
                self._starting.remove(slot)
                _fail(slot, InstanceFailed(f"agent {self.key} is shutting down"))
                if handle is not None:
                    await handle.aclose(grace=0)
            raise

    def _started_locked(self, slot: _Starting, handle: InstanceHandle) -> None:
        self._starting.remove(slot)
        self._failures, self._retry_at = 0, 0.0
        if self._closed:
            _fail(slot, InstanceFailed(f"agent {self.key} is shutting down"))
            self._close_later(handle)
        elif slot.claimed:
            self._busy[handle.id] = handle
            slot.future.set_result(handle)
        elif slot.generation != self._generation:
            self._close_later(handle)  # an older deployment's
            self._refill_locked()
        else:
            self._add_idle_locked(handle, slot.generation)
        self._wake_locked()

    def _start_failed_locked(
        self, slot: _Starting, error: Exception | None, handle: InstanceHandle | None
    ) -> None:
        self._starting.remove(slot)
        if handle is not None:
            self._close_later(handle)
        # the backend's own refusal (no node of the region) reaches the caller as it is
        failure = error if isinstance(error, (InstanceFailed, CatteryError)) else None
        if failure is None:
            failure = InstanceFailed(
                f"an instance of {self.key} failed to start: {error!r}",
                instance_id=handle.id if handle is not None else None,
            )
            failure.__cause__ = error
        self._failures += 1
        self.counts.start_failures += 1
        delay = min(MAX_BACKOFF_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        if not _fail(slot, failure):
            logger.bind(agent=self.key).warning(
                f"A warm instance failed to start; refilling again in {delay:g} s: {failure}"
            )
        self._wake_locked()

    async def _deferred_refill_task(self) -> None:
        await asyncio.sleep(REFILL_DELAY_SECONDS)
        async with self._lock:
            self._refill_pending = False
            self._refill_locked()

    async def _maintain_task(self) -> None:
        """Retire cooled-down and dead idle instances; retry refills after failures."""
        while True:
            tick = min(MAX_TICK_SECONDS, self.options.cooldown_seconds / 4)
            await asyncio.sleep(max(MIN_TICK_SECONDS, tick))
            await self.maintain()

    async def maintain(self) -> None:
        """One tick of the maintenance: trim, then refill, unless a warm acquire's
        replacement is due shortly (``REFILL_DELAY_SECONDS``): a tick must not start it
        while that session is still being recorded and dispatched."""
        async with self._lock:
            self._trim_locked()
            if not self._refill_pending:
                self._refill_locked()

    def __repr__(self) -> str:
        s = self.stats()
        return f"<Pool {self.key} idle={s.idle} starting={s.starting} busy={s.busy}>"


def _fail(slot: _Starting, exc: BaseException) -> bool:
    """Hand ``exc`` to the acquire waiting on ``slot``; whether one was waiting."""
    if slot.future.done():
        return slot.claimed
    if slot.claimed:
        slot.future.set_exception(exc)
        return True
    slot.future.cancel()
    return False
