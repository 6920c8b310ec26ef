"""The log router: lines by session, written in order. A flush returns only once what was
buffered before it, and a batch another flush has under way, are stored; a failed write is
retried, not lost; what an instance prints before it is bound is kept for its session."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cattery.control.logrouter import InstanceContext, LogRecord, LogRouter, Sample

CONTEXT = InstanceContext("org1", "agent1", "dep1", "session-1")


@dataclass
class Store:
    written: list[LogRecord] = field(default_factory=list)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    writing: asyncio.Event = field(default_factory=asyncio.Event)
    failures: int = 0

    async def write(self, lines: list[LogRecord], samples: list[Sample]) -> None:
        self.writing.set()
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("database is locked")
        self.written.extend(lines)

    def texts(self) -> list[str]:
        return [r.line for r in self.written]


async def test_a_flush_waits_for_the_batch_already_on_its_way() -> None:
    store = Store()
    router = LogRouter(writer=store.write)
    router.bind("inst1", CONTEXT)
    router.line("inst1", "one")
    first = asyncio.create_task(router.flush())
    await asyncio.wait_for(store.writing.wait(), timeout=5)  # "one" is on its way
    router.line("inst1", "two")

    second = asyncio.create_task(router.flush())
    await asyncio.sleep(0)
    assert not second.done()  # it does not return while "one" is not stored
    store.gate.set()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=5)

    assert store.texts() == ["one", "two"]


async def test_a_failed_write_is_retried_with_its_lines() -> None:
    store = Store(failures=1)
    store.gate.set()
    router = LogRouter(writer=store.write)
    router.bind("inst1", CONTEXT)
    router.line("inst1", "kept")

    await router.flush()  # fails: the lines stay buffered
    assert store.texts() == []
    await router.flush()

    assert store.texts() == ["kept"]


async def test_lines_before_the_binding_belong_to_the_session_bound_later() -> None:
    store = Store()
    store.gate.set()
    router = LogRouter(writer=store.write)
    router.line("inst1", "Traceback (most recent call last):")  # printed before it was bound
    router.bind("inst1", CONTEXT)
    await router.flush()

    assert [(r.session_id, r.line) for r in store.written] == [
        ("session-1", "Traceback (most recent call last):")
    ]
