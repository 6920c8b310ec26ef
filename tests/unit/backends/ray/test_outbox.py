"""A node host's outbox: what it collects is taken at once, and it keeps the newest lines
while nobody takes them."""

from __future__ import annotations

import asyncio

from cattery.backends.ray.outbox import Outbox


async def test_a_take_returns_as_soon_as_something_is_there() -> None:
    box = Outbox()
    taking = asyncio.ensure_future(box.take(wait=30))
    await asyncio.sleep(0)
    box.line("inst_a", "hello")
    box.sample("inst_a", 12.0, 2048)
    box.exited("inst_a", 0, "stopped")
    batch = await asyncio.wait_for(taking, 5)
    assert batch.lines == [("inst_a", "hello")]
    assert batch.samples == [("inst_a", 12.0, 2048)]
    assert batch.exits == [("inst_a", 0, "stopped")]
    assert not await box.take(wait=0.01)


async def test_an_untaken_box_keeps_the_newest_lines_and_counts_the_rest() -> None:
    box = Outbox(limit=3)
    for n in range(5):
        box.line("inst_a", f"line {n}")
    batch = await box.take(wait=0)
    assert [line for _, line in batch.lines] == ["line 2", "line 3", "line 4"]
    assert batch.dropped == 2
