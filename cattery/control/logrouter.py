"""Turns what instances print into stored log lines and resource samples, by session.

Backends hand over raw lines per instance; the router knows which agent, deployment and
session each instance serves, reads the session id the runtime puts on every line, and
writes in batches so a chatty bot never holds up a request.

Storage is bounded: a session stores at most ``max_session_lines`` lines and
``max_session_bytes`` bytes; what it prints beyond is counted, and summarised in one
stored line when the session ends. Stored lines older than the retention are pruned.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loguru import logger

from cattery.contract import BOT_STARTED, SESSION_ENDED
from cattery.tasks import OwnedTasks

LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \| ")
SESSION_TAG = re.compile(r" \| ([0-9a-fA-F-]{36}) - ")
END_STATE = re.compile(re.escape(SESSION_ENDED) + r" (\w+)")
FLUSH_INTERVAL = 0.25
MAX_LINE_CHARS = 16_000
#: lines written per transaction: other writers get the database between batches
FLUSH_BATCH = 500
#: how often stored lines past their retention are pruned
PRUNE_INTERVAL = 3600.0
DEFAULT_MAX_SESSION_LINES = 20_000
DEFAULT_MAX_SESSION_BYTES = 4 * 1024 * 1024
#: what a stored line costs beyond its text (its ids and index entries), counted in the
#: byte cap so that the cap bounds the storage a session takes, not only its text
ROW_OVERHEAD_BYTES = 300


@dataclass(frozen=True)
class InstanceContext:
    organization_id: str
    agent_id: str
    deployment_id: str
    session_id: str | None = None


@dataclass(frozen=True)
class LogRecord:
    organization_id: str
    agent_id: str
    deployment_id: str
    session_id: str | None
    instance_id: str | None
    ts: datetime
    line: str


@dataclass(frozen=True)
class Sample:
    session_id: str
    t: datetime
    cpu_millicores: float
    memory_bytes: int


UNBOUND_BACKLOG = 500
#: bindings kept after their session, so late lines still find it; the oldest go first
MAX_BINDINGS = 20_000


@dataclass
class _Quota:
    """What one session (or an instance's session-less lines) has stored, and dropped."""

    max_lines: int
    max_size: int
    lines: int = 0
    size: int = 0
    full: bool = False
    dropped_lines: int = 0
    dropped_size: int = 0
    #: (instance id, its context, session id) of the last dropped line: the summary's
    last: tuple[str, InstanceContext, str | None] | None = None

    def take(self, size: int) -> bool:
        """Count a line of ``size`` against the share; False when it doesn't fit."""
        if self.full or self.lines >= self.max_lines or self.size + size > self.max_size:
            self.full = True
            return False
        self.lines += 1
        self.size += size
        return True

    def drop(
        self, size: int, instance_id: str, ctx: InstanceContext, session_id: str | None = None
    ) -> None:
        self.dropped_lines += 1
        self.dropped_size += size
        self.last = (instance_id, ctx, session_id if session_id is not None else ctx.session_id)


Writer = Callable[[list[LogRecord], list[Sample]], Awaitable[None]]
Pruner = Callable[[], Awaitable[object]]
SessionEvent = Callable[[str, str, datetime], None]  # (session_id, event, when)


@dataclass
class LogRouter:
    """Owns the buffer and its flush task; ``aclose`` writes what is left."""

    writer: Writer
    on_session_event: SessionEvent | None = None
    max_session_lines: int = DEFAULT_MAX_SESSION_LINES
    max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES
    #: deletes stored lines past their retention; run at start, then every hour
    pruner: Pruner | None = None
    _quotas: dict[str, _Quota] = field(default_factory=dict)
    _instances: dict[str, InstanceContext] = field(default_factory=dict)
    _unbound: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    _lines: list[LogRecord] = field(default_factory=list)
    _samples: list[Sample] = field(default_factory=list)
    _tasks: OwnedTasks = field(default_factory=lambda: OwnedTasks("log router"))
    #: one flush at a time: a flush returns only once the lines buffered before it, and
    #: any batch already on its way to the store, are written
    _flushing: asyncio.Lock = field(default_factory=asyncio.Lock)

    def start(self) -> None:
        if not self._tasks and not self._tasks.closed:
            self._tasks.spawn(self._flush_task(), "flush_task")

    def bind(self, instance_id: str, context: InstanceContext) -> None:
        """Attribute an instance's lines, including what it printed before, to ``context``."""
        self._instances.pop(instance_id, None)
        self._instances[instance_id] = context
        while len(self._instances) > MAX_BINDINGS:
            self._instances.pop(next(iter(self._instances)))
        for when, text in self._unbound.pop(instance_id, []):
            self._record(instance_id, context, when, text)

    def unbind(self, instance_id: str) -> None:
        context = self._instances.pop(instance_id, None)
        self._unbound.pop(instance_id, None)
        self._summarise(_instance_key(instance_id))
        if context is not None and context.session_id:
            self._summarise(context.session_id)

    def line(self, instance_id: str, text: str) -> None:
        context = self._instances.get(instance_id)
        if context is None:
            backlog = self._unbound.setdefault(instance_id, [])
            if len(backlog) < UNBOUND_BACKLOG:
                backlog.append((datetime.now(UTC), text.rstrip("\n")[:MAX_LINE_CHARS]))
            return
        if context.session_id is not None and not text.startswith(("1", "2")):
            # the hot path of a flood: a bot's own print (the runtime's lines start with a
            # date), counted against its session's share before anything is built
            quota = self._quotas.get(context.session_id)
            if quota is not None and quota.full:
                quota.drop(len(text) + ROW_OVERHEAD_BYTES, instance_id, context)
                return
        self._record(instance_id, context, datetime.now(UTC), text.rstrip("\n")[:MAX_LINE_CHARS])

    def _record(self, instance_id: str, ctx: InstanceContext, now: datetime, text: str) -> None:
        """One instance serves one session: untagged lines belong to that session."""
        formatted = LINE_START.match(text) is not None  # the runtime's own lines
        tag = SESSION_TAG.search(text) if formatted else None
        session_id = tag.group(1) if tag else ctx.session_id
        self._store(
            session_id or _instance_key(instance_id), instance_id, ctx, session_id, now, text
        )
        if not (session_id and formatted):  # a bot's own print marks no session event
            return
        ended = END_STATE.search(text)
        if self.on_session_event is not None:
            if BOT_STARTED in text:
                self.on_session_event(session_id, "bot_started", now)
            elif ended is not None:
                self.on_session_event(session_id, f"ended:{ended.group(1)}", now)
        if ended is not None:
            self._summarise(session_id)

    def _store(
        self,
        key: str,
        instance_id: str,
        ctx: InstanceContext,
        session_id: str | None,
        now: datetime,
        text: str,
    ) -> None:
        """Buffer the line unless its session has used up its share; then count it."""
        quota = self._quotas.get(key)
        if quota is None:
            quota = self._quotas[key] = _Quota(self.max_session_lines, self.max_session_bytes)
            while len(self._quotas) > MAX_BINDINGS:
                self._summarise(next(iter(self._quotas)))
        size = len(text) + ROW_OVERHEAD_BYTES
        if not quota.take(size):
            quota.drop(size, instance_id, ctx, session_id)
            return
        self._buffer(ctx, session_id, instance_id, now, text)

    def _buffer(
        self,
        ctx: InstanceContext,
        session_id: str | None,
        instance_id: str,
        when: datetime,
        text: str,
    ) -> None:
        record = LogRecord(
            ctx.organization_id,
            ctx.agent_id,
            ctx.deployment_id,
            session_id,
            instance_id,
            when,
            text,
        )
        self._lines.append(record)

    def _summarise(self, key: str) -> None:
        """The session is done: one stored line for what it printed beyond its share."""
        quota = self._quotas.pop(key, None)
        if quota is None or quota.last is None:
            return
        instance_id, ctx, session_id = quota.last
        line = (
            f"{quota.dropped_lines} more line(s) were not stored: a session stores at most "
            f"{self.max_session_lines} lines and {self.max_session_bytes} bytes of logs "
            f"(each line counts {ROW_OVERHEAD_BYTES} bytes beyond its text)"
        )
        self._buffer(ctx, session_id, instance_id, datetime.now(UTC), line)

    def deployment_line(
        self, organization_id: str, agent_id: str, deployment_id: str, level: str, text: str
    ) -> None:
        """A line about a deployment itself (its environment, how it runs), for the agent's
        logs, in the runtime's format with no session."""
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        line = f"{stamp} | {level:<8} | cattery.deploy | NONE - {text}"[:MAX_LINE_CHARS]
        self._lines.append(
            LogRecord(organization_id, agent_id, deployment_id, None, None, now, line)
        )

    def sample(self, instance_id: str, cpu_millicores: float, memory_bytes: int) -> None:
        context = self._instances.get(instance_id)
        if context is None or context.session_id is None:
            return
        self._samples.append(
            Sample(context.session_id, datetime.now(UTC), cpu_millicores, memory_bytes)
        )

    async def flush(self) -> None:
        """Write what is buffered, ``FLUSH_BATCH`` lines per transaction; after a batch
        another flush has under way."""
        async with self._flushing:
            await self._flush_buffered()

    async def _flush_buffered(self) -> None:
        while self._lines or self._samples:
            lines, self._lines = self._lines[:FLUSH_BATCH], self._lines[FLUSH_BATCH:]
            samples, self._samples = self._samples, []
            try:
                await self.writer(lines, samples)
            except Exception as exc:
                logger.opt(exception=exc).error(
                    f"Failed to store {len(lines)} log line(s); retrying"
                )
                self._lines[:0] = lines
                self._samples[:0] = samples
                return
            await asyncio.sleep(0)  # requests waiting for the database go first

    async def _flush_task(self) -> None:
        next_prune = 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()
            if self.pruner is not None and loop.time() >= next_prune:
                next_prune = loop.time() + PRUNE_INTERVAL
                try:
                    await self.pruner()
                except Exception as exc:
                    logger.opt(exception=exc).error("Failed to prune old log lines")

    async def aclose(self) -> None:
        for key in list(self._quotas):
            self._summarise(key)
        await self._tasks.aclose()
        await self.flush()


def _instance_key(instance_id: str) -> str:
    """The quota key of an instance's lines that name no session."""
    return f"instance:{instance_id}"
