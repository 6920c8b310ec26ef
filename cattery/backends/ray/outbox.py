"""What a node host has to tell the control plane: instances' lines, samples and exits.

The control plane takes them in a long poll (``NodeHost.take``); while nobody takes
(a control plane restarting) the box keeps the newest ``limit`` lines and counts the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

DEFAULT_LIMIT = 100_000


@dataclass
class Batch:
    lines: list[tuple[str, str]] = field(default_factory=list)
    samples: list[tuple[str, float, int]] = field(default_factory=list)
    #: (instance id, exit code, terminal status)
    exits: list[tuple[str, int | None, str]] = field(default_factory=list)
    dropped: int = 0

    def __bool__(self) -> bool:
        return bool(self.lines or self.samples or self.exits or self.dropped)


class Outbox:
    """Collects on the node host's loop; ``take`` hands everything over at once."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._lines: deque[tuple[str, str]] = deque()
        self._samples: list[tuple[str, float, int]] = []
        self._exits: list[tuple[str, int | None, str]] = []
        self._dropped = 0
        self._limit = limit
        self._wake = asyncio.Event()

    def line(self, instance_id: str, line: str) -> None:
        if len(self._lines) >= self._limit:
            self._lines.popleft()
            self._dropped += 1
        self._lines.append((instance_id, line))
        self._wake.set()

    def sample(self, instance_id: str, cpu_millicores: float, memory_bytes: int) -> None:
        if len(self._samples) < self._limit:
            self._samples.append((instance_id, cpu_millicores, memory_bytes))
        self._wake.set()

    def exited(self, instance_id: str, code: int | None, status: str) -> None:
        self._exits.append((instance_id, code, status))
        self._wake.set()

    async def take(self, wait: float) -> Batch:
        """Everything collected, once there is something or ``wait`` seconds passed."""
        if not (self._lines or self._samples or self._exits or self._dropped):
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
        batch = Batch(list(self._lines), self._samples, self._exits, self._dropped)
        self._lines.clear()
        self._samples, self._exits, self._dropped = [], [], 0
        return batch
