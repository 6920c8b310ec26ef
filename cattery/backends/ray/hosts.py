"""The control plane's side of the node hosts: one per live Ray node, found or made by name.

``NodeHosts`` follows the cluster's membership (Ray's node table), keeps a ``NodeView`` per
node with what its node host last reported (the heartbeat, every ``report_seconds``), and
pumps each node host's lines, samples and exits to ``on_batch``. A node Ray declares dead,
or whose node host is gone, is dropped and ``on_gone`` is told.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import ray
from loguru import logger
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from cattery.backends.ray.calls import answer_within, within
from cattery.backends.ray.nodehost import NodeHost, NodeOptions
from cattery.backends.ray.outbox import Batch
from cattery.backends.ray.placement import NodeView
from cattery.backends.regions import node_region
from cattery.tasks import OwnedTasks

NODE_HOST_PREFIX = "cattery-node-"
#: how long one long poll for a node host's output waits
TAKE_WAIT_SECONDS = 0.5
#: a node host call that takes longer counts as a missed heartbeat
REPORT_TIMEOUT_SECONDS = 2.0
#: a new node host's first answer: its worker process starts and imports cattery first
FIRST_REPORT_TIMEOUT_SECONDS = 60.0
#: how often a node's silence is held against ``fence_seconds``
FENCE_CHECK_SECONDS = 0.25

RemoteNodeHost = ray.remote(NodeHost)


def _cancelling() -> bool:
    """Whether this task is being cancelled, rather than a call it awaited: a Ray call's
    future cancelled under it must not end a node's heartbeat or its output silently (an
    owned task that ends cancelled is not logged), which would leave the node fenced, or
    never fenced, for good."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def node_host_name(node_id: str) -> str:
    return NODE_HOST_PREFIX + node_id


class NodeHosts:
    """Owned by the Ray backend; owns its heartbeat and pump tasks."""

    def __init__(
        self,
        options: NodeOptions,
        namespace: str,
        report_seconds: float,
        *,
        default_region: str,
        on_batch: Callable[[str, Batch], None],
        on_gone: Callable[[str, str], None],
        fence_seconds: float = 3.0,
        on_fenced: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.options = options
        self.namespace = namespace
        self.report_seconds = report_seconds
        self.default_region = default_region
        self.views: dict[str, NodeView] = {}
        self.actors: dict[str, Any] = {}
        self._on_batch = on_batch
        self._on_gone = on_gone
        self.fence_seconds = fence_seconds
        self._on_fenced = on_fenced
        self._tasks = OwnedTasks("node hosts")
        self._node_tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._attaching: set[str] = set()

    async def start(self) -> None:
        """Find or make a node host on every live node; return once each has answered."""
        await self.refresh(wait=True)
        self._tasks.spawn(self._membership_task(), "membership_task")

    def usable(self) -> list[NodeView]:
        return [view for view in self.views.values() if view.usable]

    async def refresh(self, wait: bool = False) -> None:
        """Follow Ray's node table: drop the dead, attach the new (a new node host may
        take seconds to answer: attached in the background unless ``wait``)."""
        nodes = await asyncio.to_thread(ray.nodes)
        alive = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        for node_id in list(self.views):
            if node_id not in alive:
                self.drop(node_id, "Ray declared the node dead")
        new = [
            n
            for node_id, n in alive.items()
            if node_id not in self.views and node_id not in self._attaching
        ]
        tasks = [self._tasks.spawn(self._attach(n), "attach_task") for n in new]
        if wait and tasks:
            await asyncio.wait(tasks)

    async def _attach(self, node: dict[str, Any]) -> None:
        node_id = node["NodeID"]
        self._attaching.add(node_id)
        try:
            await self._attach_now(node)
        finally:
            self._attaching.discard(node_id)

    async def _attach_now(self, node: dict[str, Any]) -> None:
        node_id, ip = node["NodeID"], node["NodeManagerAddress"]
        resources = node.get("Resources") or {}
        labels = {k: v for k, v in (node.get("Labels") or {}).items() if not k.startswith("ray.")}
        actor = RemoteNodeHost.options(  # type: ignore[attr-defined]
            name=node_host_name(node_id),
            namespace=self.namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_concurrency=1000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(node_id, ip, self.options)
        view = NodeView(
            node_id=node_id,
            ip=ip,
            labels=labels,
            region=node_region(labels, self.default_region),
            cpus=float(resources.get("CPU", 0.0)),
            memory_bytes=int(resources.get("memory", 0)),
        )
        try:
            await self._report(actor, view, FIRST_REPORT_TIMEOUT_SECONDS)
        except Exception as exc:
            logger.warning(f"Node {ip} ({node_id[:12]}): its node host did not answer: {exc!r}")
            return
        self.views[node_id] = view
        self.actors[node_id] = actor
        self._node_tasks[node_id] = [
            self._tasks.spawn(self._heartbeat_task(node_id), f"heartbeat_{ip}_task"),
            self._tasks.spawn(self._fence_task(node_id), f"fence_{ip}_task"),
            self._tasks.spawn(self._pump_task(node_id), f"pump_{ip}_task"),
        ]
        logger.info(
            f"Node {ip} ({node_id[:12]}) joined: {view.cpus:g} CPU, "
            f"{view.memory_bytes / 2**30:.1f} GiB, region {view.region}"
        )

    def drop(self, node_id: str, reason: str) -> None:
        view = self.views.pop(node_id, None)
        self.actors.pop(node_id, None)
        for task in self._node_tasks.pop(node_id, []):
            if task is not asyncio.current_task():
                task.cancel()
        if view is not None:
            logger.warning(f"Node {view.ip} ({node_id[:12]}) is gone: {reason}")
            self._on_gone(node_id, reason)

    async def _report(
        self, actor: Any, view: NodeView, timeout: float = REPORT_TIMEOUT_SECONDS
    ) -> None:
        report = await answer_within(actor.report.remote(), timeout)
        view.cpu_load = float(report["cpu_load"])
        view.memory_available = int(report["memory_available"])
        view.last_seen = time.monotonic()

    async def _membership_task(self) -> None:
        while True:
            await asyncio.sleep(self.report_seconds * 2)
            try:
                await self.refresh()
            except Exception as exc:
                logger.warning(f"Reading the cluster's nodes failed: {exc!r}")

    async def _heartbeat_task(self, node_id: str) -> None:
        while True:
            await asyncio.sleep(self.report_seconds)
            actor, view = self.actors.get(node_id), self.views.get(node_id)
            if actor is None or view is None:
                return
            try:
                await within(self._report(actor, view), REPORT_TIMEOUT_SECONDS + 1.0)
            except ray.exceptions.RayActorError as exc:
                self.drop(node_id, f"its node host died: {exc.__class__.__name__}")
                return
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                logger.warning(f"Node {view.ip}: a heartbeat's call was cancelled under it")
            except Exception as exc:
                logger.debug(f"Node {view.ip}: a heartbeat was missed: {exc!r}")
            self._fence_or_clear(node_id, view)

    async def _fence_task(self, node_id: str) -> None:
        """Look at the node's silence often, not only when a heartbeat's call gives up
        (every 3 s or so): a node must be fenced before its instances' lease runs out, or
        its sessions end unexplained before any caller is told it can't be reached."""
        while True:
            await asyncio.sleep(FENCE_CHECK_SECONDS)
            view = self.views.get(node_id)
            if view is None:
                return
            self._fence_or_clear(node_id, view)

    def _fence_or_clear(self, node_id: str, view: NodeView) -> None:
        """Fence a node whose host has not answered for ``fence_seconds`` (it hangs, or
        can't be reached: Ray takes a minute to say so, and its instances keep serving
        meanwhile); let it back once it answers again."""
        silent = time.monotonic() - (view.last_seen or 0.0)
        if not view.fenced and silent > self.fence_seconds:
            view.fenced = True
            logger.warning(
                f"Node {view.ip} ({node_id[:12]}) fenced: its node host has not answered "
                f"for {silent:.1f} s"
            )
            if self._on_fenced is not None:
                self._on_fenced(node_id, True)
        elif view.fenced and silent <= self.fence_seconds:
            view.fenced = False
            logger.info(f"Node {view.ip} ({node_id[:12]}) answers again: no longer fenced")
            if self._on_fenced is not None:
                self._on_fenced(node_id, False)

    async def _pump_task(self, node_id: str) -> None:
        while True:
            actor = self.actors.get(node_id)
            if actor is None:
                return
            try:
                batch = await actor.take.remote(TAKE_WAIT_SECONDS)
            except ray.exceptions.RayActorError as exc:
                self.drop(node_id, f"its node host died: {exc.__class__.__name__}")
                return
            except asyncio.CancelledError:
                if _cancelling():
                    raise
                logger.warning("Taking a node host's output was cancelled under it")
                await asyncio.sleep(self.report_seconds)
                continue
            except Exception as exc:
                logger.warning(f"Taking a node host's output failed: {exc!r}")
                await asyncio.sleep(self.report_seconds)
                continue
            if batch:
                self._on_batch(node_id, batch)

    async def shutdown(self) -> None:
        """Stop following the nodes; each node host closes what runs there and exits."""
        await self._tasks.aclose()
        actors = list(self.actors.values())
        results = await asyncio.gather(
            *(answer_within(a.shutdown.remote(), 30) for a in actors), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                logger.warning(f"A node host did not shut down cleanly: {result!r}")
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception as exc:
                logger.debug(f"Killing a node host failed: {exc!r}")
        self.actors.clear()
        self.views.clear()

    async def aclose(self) -> None:
        """Stop following the nodes and leave the node hosts running (for a successor)."""
        await self._tasks.aclose()
