"""Turns what instances print into stored log lines and resource samples, by session.

Backends hand over raw lines per instance; the router knows which agent, deployment and
session each instance serves, reads the session id the runtime puts on every line, and
writes in batches so a chatty bot never holds up a request.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from loguru import logger

from cattery.runtime.sessions import SESSION_ENDED

LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \| ")
SESSION_TAG = re.compile(r" \| ([0-9a-fA-F-]{36}) - ")
BOT_STARTED = "Starting bot session"
END_STATE = re.compile(re.escape(SESSION_ENDED) + r" (\w+)")
FLUSH_INTERVAL = 0.25
MAX_LINE_CHARS = 16_000


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
    instance_id: str
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


Writer = Callable[[list[LogRecord], list[Sample]], Awaitable[None]]
SessionEvent = Callable[[str, str, datetime], None]  # (session_id, event, when)


@dataclass
class LogRouter:
    """Owns the buffer and its flush task; ``aclose`` writes what is left."""

    writer: Writer
    on_session_event: SessionEvent | None = None
    _instances: dict[str, InstanceContext] = field(default_factory=dict)
    _unbound: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    _lines: list[LogRecord] = field(default_factory=list)
    _samples: list[Sample] = field(default_factory=list)
    _flush_task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> None:
        if self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_loop(), name="log-flush")

    def bind(self, instance_id: str, context: InstanceContext) -> None:
        """Attribute an instance's lines, including what it printed before, to ``context``."""
        self._instances.pop(instance_id, None)
        self._instances[instance_id] = context
        while len(self._instances) > MAX_BINDINGS:
            self._instances.pop(next(iter(self._instances)))
        for when, text in self._unbound.pop(instance_id, []):
            self._record(instance_id, context, when, text)

    def unbind(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)
        self._unbound.pop(instance_id, None)

    def line(self, instance_id: str, text: str) -> None:
        text = text.rstrip("\n")[:MAX_LINE_CHARS]
        now = datetime.now(UTC)
        context = self._instances.get(instance_id)
        if context is None:
            backlog = self._unbound.setdefault(instance_id, [])
            if len(backlog) < UNBOUND_BACKLOG:
                backlog.append((now, text))
            return
        self._record(instance_id, context, now, text)

    def _record(self, instance_id: str, ctx: InstanceContext, now: datetime, text: str) -> None:
        """One instance serves one session: untagged lines belong to that session."""
        tag = SESSION_TAG.search(text) if LINE_START.match(text) else None
        session_id = tag.group(1) if tag else ctx.session_id
        record = LogRecord(
            ctx.organization_id, ctx.agent_id, ctx.deployment_id, session_id, instance_id, now, text
        )
        self._lines.append(record)
        if session_id and self.on_session_event is not None:
            if BOT_STARTED in text:
                self.on_session_event(session_id, "bot_started", now)
            elif (match := END_STATE.search(text)) is not None:
                self.on_session_event(session_id, f"ended:{match.group(1)}", now)

    def sample(self, instance_id: str, cpu_millicores: float, memory_bytes: int) -> None:
        context = self._instances.get(instance_id)
        if context is None or context.session_id is None:
            return
        self._samples.append(
            Sample(context.session_id, datetime.now(UTC), cpu_millicores, memory_bytes)
        )

    async def flush(self) -> None:
        lines, self._lines = self._lines, []
        samples, self._samples = self._samples, []
        if not lines and not samples:
            return
        try:
            await self.writer(lines, samples)
        except Exception as exc:
            logger.opt(exception=exc).error(f"Failed to store {len(lines)} log line(s); retrying")
            self._lines[:0] = lines
            self._samples[:0] = samples

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            await self.flush()

    async def aclose(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
            await asyncio.gather(self._flush_task, return_exceptions=True)
            self._flush_task = None
        await self.flush()
