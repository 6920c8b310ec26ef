"""A session stores at most its share of log lines; the rest is counted and summarised in
one stored line when the session ends."""

from __future__ import annotations

from cattery.control.logrouter import (
    ROW_OVERHEAD_BYTES,
    InstanceContext,
    LogRecord,
    LogRouter,
    Sample,
)
from cattery.runtime.sessions import SESSION_ENDED

SESSION = "0f8fad5b-d9cb-469f-a165-70867728950e"
FORMATTED = f"2026-01-01 00:00:00.000 | INFO     | bot:run:1 | {SESSION} - "


async def test_a_session_stores_its_share_and_one_summary() -> None:
    stored: list[LogRecord] = []

    async def writer(lines: list[LogRecord], _: list[Sample]) -> None:
        stored.extend(lines)

    router = LogRouter(writer=writer, max_session_lines=5, max_session_bytes=10_000)
    router.bind("inst_1", InstanceContext("org", "agt", "dep", SESSION))
    for i in range(1000):
        router.line("inst_1", f"line {i}")
    router.line("inst_1", FORMATTED + f"{SESSION_ENDED} completed")
    await router.flush()
    texts = [r.line for r in stored]
    assert texts[:5] == [f"line {i}" for i in range(5)]
    assert len(texts) == 6, texts
    assert texts[5].startswith("996 more line(s) were not stored")
    assert {r.session_id for r in stored} == {SESSION}


async def test_bytes_count_too_and_unbinding_summarises() -> None:
    stored: list[LogRecord] = []

    async def writer(lines: list[LogRecord], _: list[Sample]) -> None:
        stored.extend(lines)

    per_line = 100 + ROW_OVERHEAD_BYTES
    router = LogRouter(writer=writer, max_session_bytes=per_line * 3)
    router.bind("inst_1", InstanceContext("org", "agt", "dep", SESSION))
    for _ in range(10):
        router.line("inst_1", "x" * 100)
    router.unbind("inst_1")
    await router.aclose()
    assert len(stored) == 4
    assert stored[-1].line.startswith("7 more line(s) were not stored")
