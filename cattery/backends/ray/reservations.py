"""Cattery's instances as Ray resources: one placement group per instance, on its node.

An instance is a process the node host forks, not a Ray task, so Ray would not know what
it uses. A placement group holding the profile's CPU and memory on the instance's node
(``node:<ip>``) makes Ray's accounting, its other workloads and its autoscaler see it;
one that can't be placed stays pending, which is the autoscaler's demand. The groups
belong to the control plane's Ray job: a control plane that dies takes them with it, and
its successor reserves again for what it adopts. Made and removed off the start path, one
at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from ray.util.placement_group import placement_group, remove_placement_group

from cattery.backends.profiles import Limits
from cattery.tasks import OwnedTasks

#: of a node's ``node:<ip>`` resource (1.0): what pins a bundle to that node
NODE_SHARE = 0.001


def bundle(ip: str, limits: Limits) -> dict[str, float]:
    return {"CPU": limits.cpus, "memory": float(limits.memory_bytes), f"node:{ip}": NODE_SHARE}


class Reservations:
    """Owned by the Ray backend; owns the task that talks to Ray's GCS."""

    def __init__(self) -> None:
        self._groups: dict[str, Any] = {}
        self._queue: asyncio.Queue[tuple[str, str, dict[str, float] | None]] = asyncio.Queue()
        self._tasks = OwnedTasks("ray reservations")

    def start(self) -> None:
        self._tasks.spawn(self._apply_task(), "apply_task")

    def reserve(self, instance_id: str, ip: str, limits: Limits) -> None:
        self._queue.put_nowait(("reserve", instance_id, bundle(ip, limits)))

    def release(self, instance_id: str) -> None:
        self._queue.put_nowait(("release", instance_id, None))

    @property
    def held(self) -> int:
        return len(self._groups)

    async def _apply_task(self) -> None:
        while True:
            op, instance_id, shape = await self._queue.get()
            try:
                if op == "reserve" and shape is not None:
                    self._groups[instance_id] = await asyncio.to_thread(
                        placement_group, [shape], strategy="STRICT_PACK"
                    )
                elif op == "release" and instance_id in self._groups:
                    group = self._groups.pop(instance_id)
                    await asyncio.to_thread(remove_placement_group, group)
            except Exception as exc:
                logger.debug(f"Ray reservation ({op} {instance_id}) failed: {exc!r}")

    async def aclose(self) -> None:
        """Stop, and remove every group still held."""
        await self._tasks.aclose()
        for group in self._groups.values():
            try:
                await asyncio.to_thread(remove_placement_group, group)
            except Exception as exc:
                logger.debug(f"Removing a Ray reservation failed: {exc!r}")
        self._groups.clear()
