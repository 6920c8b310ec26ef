"""The Ray backend: instances on a Ray cluster's nodes, each started by that node's host.

A start picks a node (``placement.choose``) among those of the spec's region (a node's
``cattery-region`` label) that have room for its profile; ships the agent's folder by content
hash; and asks that node's host to fork the instance there. Lines, samples and exits come
back from the node hosts' batches to the same sinks as the local backend's.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import ray
from loguru import logger
from ray.autoscaler.sdk import request_resources
from ray.exceptions import RayError

from cattery.backends.base import (
    Adoption,
    InstanceFailed,
    InstanceHandle,
    InstanceSpec,
    InstanceStatus,
    LineSink,
    Locator,
    MetricsSink,
)
from cattery.backends.handles import TERMINAL, close_all
from cattery.backends.profiles import DEFAULT_PROFILE, PROFILES, Limits
from cattery.backends.ray.calls import answer_within
from cattery.backends.ray.connection import connect, disconnect
from cattery.backends.ray.handle import RayInstanceHandle
from cattery.backends.ray.hosts import NodeHosts
from cattery.backends.ray.nodehost import NodeOptions, Shipment
from cattery.backends.ray.outbox import Batch
from cattery.backends.ray.placement import NodeView, choose, serves
from cattery.backends.ray.reservations import Reservations
from cattery.backends.ray.shipping import Packer
from cattery.backends.regions import NoNodeInRegion
from cattery.errors import AtCapacity
from cattery.settings import RaySettings
from cattery.tasks import OwnedTasks

#: deployments whose shipment is remembered (the oldest is read again when needed)
SHIPMENTS_KEPT = 256
#: Ray's autoscaler is told of the demand at most this often
DEMAND_INTERVAL_SECONDS = 1.0
#: beyond an instance's lease, before a fenced node's instances are taken for gone
LEASE_MARGIN_SECONDS = 2.0
#: after a start, instances the node hosts hold that no one adopted (started by a control
#: plane that died before storing them) are closed this much later
RECONCILE_AFTER_SECONDS = 30.0
#: output of instances not (yet) ours, kept until they are adopted or spawned: how many
#: instances, and how many lines each
HELD_INSTANCES, HELD_LINES = 1000, 2000
#: how long a node back from a fence may take to list or close its instances
RECONCILE_SECONDS = 10.0


def limits_of(spec: InstanceSpec) -> Limits:
    return spec.limits or PROFILES.get(spec.profile, PROFILES[DEFAULT_PROFILE])


@dataclass
class _Held:
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=HELD_LINES))
    exit: tuple[int | None, str] | None = None

    def add(self, line: str) -> None:
        self.lines.append(line)


def _bundle(limits: Limits) -> dict[str, float]:
    return {"CPU": limits.cpus, "memory": float(limits.memory_bytes)}


class RayBackend:
    """Owns its handles until they are closed, and the node hosts' followers."""

    def __init__(
        self,
        settings: RaySettings,
        options: NodeOptions,
        default_region: str,
        line_sink: LineSink,
        metrics_sink: MetricsSink,
    ) -> None:
        self.settings = settings
        self.options = options
        self.default_region = default_region
        self._line_sink = line_sink
        self._metrics_sink = metrics_sink
        self._handles: dict[str, RayInstanceHandle] = {}
        self._packer = Packer()
        self._shipped: dict[str, Any] = {}  # bundle hash -> the object holding its archive
        self._shipments: dict[tuple[str, str], Shipment] = {}  # (deployment, image) -> it
        self._hosts: NodeHosts | None = None
        self._closed = False
        self._demand_due = False
        self._tasks = OwnedTasks("ray backend")
        #: lines and exits of instances we hold no handle of yet (spawn replies racing
        #: their first lines; instances a restarted control plane is about to adopt)
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._reservations = Reservations()

    @property
    def handles(self) -> list[RayInstanceHandle]:
        return list(self._handles.values())

    @property
    def hosts(self) -> NodeHosts:
        if self._hosts is None:
            raise RuntimeError("the Ray backend is not started")
        return self._hosts

    def nodes(self) -> list[NodeView]:
        return list(self._hosts.views.values()) if self._hosts is not None else []

    async def start(self) -> None:
        if self._hosts is not None:
            return
        started = time.monotonic()
        await asyncio.to_thread(connect, self.settings)
        hosts = NodeHosts(
            self.options,
            self.settings.namespace,
            self.settings.report_seconds,
            default_region=self.default_region,
            on_batch=self._on_batch,
            on_gone=self._on_gone,
            fence_seconds=self.settings.fence_seconds,
            on_fenced=self._on_fenced,
        )
        await hosts.start()
        self._hosts = hosts
        self._tasks.spawn(self._reconcile_task(), "reconcile_task")
        self._reservations.start()
        logger.info(
            f"Connected to the Ray cluster in {time.monotonic() - started:.1f} s: "
            f"{len(hosts.views)} node(s)"
        )

    # -- starts ----------------------------------------------------------------------

    async def spawn(self, spec: InstanceSpec) -> RayInstanceHandle:
        if self._closed:
            raise RuntimeError("the Ray backend is closed")
        hosts = self.hosts
        limits = limits_of(spec)
        view = choose(hosts.views.values(), limits, spec.agent_key, spec.region)
        if view is None and not any(serves(v, spec.region) for v in hosts.views.values()):
            raise NoNodeInRegion(spec.region or self.default_region)
        if view is None:
            self._want_demand()
            where = f" in region {spec.region}" if spec.region else ""
            raise AtCapacity(f"No node{where} has room for another instance of {spec.agent_key}")
        view.reserve(spec.agent_key, limits)
        actor = hosts.actors[view.node_id]
        try:
            shipment = await self._shipment(spec)
            reply = await actor.spawn.remote(spec, shipment)
        except (RayError, OSError) as exc:
            view.release(spec.agent_key, limits)
            raise InstanceFailed(f"starting on node {view.ip} failed: {exc}") from exc
        except BaseException:
            view.release(spec.agent_key, limits)
            raise
        handle = RayInstanceHandle(
            instance_id=reply["instance_id"],
            spec=spec,
            node_id=view.node_id,
            node_ip=view.ip,
            actor=actor,
            address=reply["address"],
            token=reply["token"],
            pid=reply["pid"],
            forked=reply["forked"],
            on_closed=self._forget,
        )
        self._own(handle)
        self._want_demand()
        logger.bind(**handle.log_context()).info(f"Started instance on node {view.ip}")
        return handle

    def _own(self, handle: RayInstanceHandle) -> None:
        """Hold ``handle`` (its resources reserved in Ray), and give it what its node host
        said before we did."""
        self._handles[handle.id] = handle
        self._reservations.reserve(handle.id, handle.node_ip, limits_of(handle.spec))
        held = self._held.pop(handle.id, None)
        if held is not None:
            for line in held.lines:
                self._line_sink(handle.id, line)
            if held.exit is not None:
                handle.exited(*held.exit)

    async def _shipment(self, spec: InstanceSpec) -> Shipment:
        """The spec's folder, packed and in the object store once per content hash. A
        deployment's folder is read once: a change is a new deployment."""
        key = (spec.deployment_id, spec.image)
        shipment = self._shipments.get(key)
        if shipment is not None:
            return shipment
        bundle, entry = await asyncio.to_thread(self._packer.pack_image, spec.image)
        ref = self._shipped.get(bundle.digest)
        if ref is None:
            ref = await asyncio.to_thread(ray.put, bundle.data)
            self._shipped[bundle.digest] = ref
        shipment = Shipment(bundle.digest, [ref], entry)
        self._shipments[key] = shipment
        while len(self._shipments) > SHIPMENTS_KEPT:
            self._shipments.pop(next(iter(self._shipments)))
        return shipment

    async def prepare(self, spec: InstanceSpec) -> None:
        """Ship the code and load the forking parent on every node that may run ``spec``,
        so a first start anywhere is a fork."""
        if self._closed or self._hosts is None:
            return
        try:
            shipment = await self._shipment(spec)
        except OSError as exc:
            logger.warning(f"Packing {spec.image} failed: {exc}")
            return
        targets = [
            (view, self._hosts.actors[view.node_id])
            for view in self._hosts.usable()
            if serves(view, spec.region) and view.node_id in self._hosts.actors
        ]
        results = await asyncio.gather(
            *(actor.prepare.remote(spec, shipment) for _, actor in targets),
            return_exceptions=True,
        )
        for (view, _), result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                logger.warning(f"Preparing {spec.agent_key} on node {view.ip} failed: {result}")

    async def retire(self, agent_key: str) -> None:
        if self._hosts is None:
            return
        actors = list(self._hosts.actors.values())
        await asyncio.gather(*(a.retire.remote(agent_key) for a in actors), return_exceptions=True)

    # -- what node hosts tell ---------------------------------------------------------

    def _on_batch(self, node_id: str, batch: Batch) -> None:
        for instance_id, line in batch.lines:
            if instance_id in self._handles:
                self._line_sink(instance_id, line)
            else:
                self._hold(instance_id).add(line)
        for instance_id, cpu, memory in batch.samples:
            if instance_id in self._handles:
                self._metrics_sink(instance_id, cpu, memory)
        for instance_id, code, status in batch.exits:
            handle = self._handles.get(instance_id)
            if handle is not None:
                handle.exited(code, status)
            else:
                self._hold(instance_id).exit = (code, status)
        if batch.dropped:
            logger.warning(f"Node {node_id[:12]} dropped {batch.dropped} log line(s)")

    def _hold(self, instance_id: str) -> _Held:
        held = self._held.get(instance_id)
        if held is None:
            held = self._held[instance_id] = _Held()
            while len(self._held) > HELD_INSTANCES:
                self._held.popitem(last=False)
        return held

    def _on_gone(self, node_id: str, reason: str) -> None:
        for handle in self.handles:
            if handle.node_id == node_id:
                handle.lost(f"its node is gone ({reason})")

    def _on_fenced(self, node_id: str, fenced: bool) -> None:
        """A fenced node's instances take no requests; once their lease has surely run out
        (they exited by themselves) they are gone, and their sessions end."""
        reason = "its node stopped answering" if fenced else None
        for handle in self.handles:
            if handle.node_id == node_id:
                handle.fence(reason)
        if fenced:
            self._tasks.spawn(self._give_up_task(node_id), "give_up_task")
        else:
            self._tasks.spawn(self._after_fence_task(node_id), "after_fence_task")

    async def _give_up_task(self, node_id: str) -> None:
        await asyncio.sleep(self.settings.lease_seconds + LEASE_MARGIN_SECONDS)
        view = self._hosts.views.get(node_id) if self._hosts is not None else None
        if view is not None and not view.fenced:
            return  # it answered in time: its instances kept their lease
        for handle in self.handles:
            if handle.node_id == node_id and handle.fenced:
                handle.lost("its node stopped answering and the instance's lease ran out")

    async def _after_fence_task(self, node_id: str) -> None:
        """A node back from a fence closes what it still runs that we gave up on: nothing
        of before is served twice (its instances' lease mostly saw to it already)."""
        actor = self._hosts.actors.get(node_id) if self._hosts is not None else None
        if actor is None:
            return
        try:
            held = await answer_within(actor.instance_ids.remote(), RECONCILE_SECONDS)
        except (RayError, TimeoutError) as exc:
            logger.warning(f"Asking node {node_id[:12]} what it runs failed: {exc!r}")
            return
        for instance_id in held:
            handle = self._handles.get(instance_id)
            if handle is None or handle.status in TERMINAL:
                logger.warning(f"Closing instance {instance_id}: given up while fenced")
                try:
                    await answer_within(actor.close.remote(instance_id, 0.0), RECONCILE_SECONDS)
                except (RayError, TimeoutError) as exc:
                    logger.warning(f"Closing it failed: {exc!r}")

    def _forget(self, handle: RayInstanceHandle) -> None:
        if self._handles.pop(handle.id, None) is None:
            return
        self._reservations.release(handle.id)
        view = self._hosts.views.get(handle.node_id) if self._hosts is not None else None
        if view is not None:
            view.release(handle.spec.agent_key, limits_of(handle.spec))
        self._want_demand()

    # -- after a control plane's restart --------------------------------------------

    def locate(self, handle: InstanceHandle) -> Locator | None:
        """Its address and token, and (as ``log``) the node it runs on."""
        if not isinstance(handle, RayInstanceHandle):
            return None
        return Locator(
            address=handle.address, token=handle.token, pid=handle.pid, log=handle.node_id
        )

    async def adopt(self, instance_id: str, spec: InstanceSpec, locator: Locator) -> Adoption:
        """Take back an instance an earlier control plane started on ``locator.log``'s node,
        whose node host holds it still (node hosts outlive control planes)."""
        hosts = self.hosts
        node_id = locator.log or ""
        actor, view = hosts.actors.get(node_id), hosts.views.get(node_id)
        if actor is None or view is None:
            logger.info(f"Instance {instance_id}: its node {node_id[:12]} is gone; not adopted")
            return Adoption(None)
        try:
            found = await actor.adopt.remote(instance_id)
        except RayError as exc:
            logger.warning(f"Instance {instance_id}: its node host did not answer: {exc!r}")
            return Adoption(None)
        held = self._held.pop(instance_id, None)
        if found is None or found["exited"]:
            lines = tuple(found["last_lines"]) if found else ()
            for line in held.lines if held is not None else ():
                self._line_sink(instance_id, line)
            return Adoption(None, lines)
        if held is not None:
            self._held[instance_id] = held  # handed to the handle by _own
        handle = RayInstanceHandle(
            instance_id=instance_id,
            spec=spec,
            node_id=node_id,
            node_ip=view.ip,
            actor=actor,
            address=found["address"],
            token=locator.token,
            pid=found["pid"],
            forked=found["forked"],
            status=InstanceStatus.READY,
            on_closed=self._forget,
        )
        view.reserve(spec.agent_key, limits_of(spec))
        self._own(handle)
        logger.bind(**handle.log_context()).info("Adopted instance")
        return Adoption(handle)

    async def last_lines(self, instance_id: str) -> tuple[str, ...]:
        """The last lines of a gone instance, from whichever node host kept its log."""
        if self._hosts is None:
            return ()
        actors = list(self._hosts.actors.values())
        found = await asyncio.gather(
            *(a.last_lines.remote(instance_id) for a in actors), return_exceptions=True
        )
        for lines in found:
            if isinstance(lines, tuple) and lines:
                return lines
        return ()

    async def _reconcile_task(self) -> None:
        """Close what node hosts hold that no one adopted: instances a control plane that
        died started after its last record of them (warm ones would wait forever)."""
        await asyncio.sleep(RECONCILE_AFTER_SECONDS)
        hosts = self.hosts
        for node_id, actor in list(hosts.actors.items()):
            try:
                held = await actor.instance_ids.remote()
            except RayError:
                continue
            strays = [i for i in held if i not in self._handles]
            for instance_id in strays:
                logger.info(f"Closing instance {instance_id} on {node_id[:12]}: no one owns it")
            await asyncio.gather(
                *(actor.close.remote(i, 5.0) for i in strays), return_exceptions=True
            )

    # -- Ray's autoscaler ---------------------------------------------------------------

    def _want_demand(self) -> None:
        """Tell Ray's autoscaler what cattery's instances need (soon, at most once a second)."""
        if self._demand_due or self._closed:
            return
        self._demand_due = True
        self._tasks.spawn(self._demand_task(), "demand_task")

    async def _demand_task(self) -> None:
        await asyncio.sleep(DEMAND_INTERVAL_SECONDS)
        self._demand_due = False
        bundles = [_bundle(limits_of(h.spec)) for h in self._handles.values()]
        try:
            await asyncio.to_thread(request_resources, bundles=bundles)
        except Exception as exc:
            logger.debug(f"Telling Ray's autoscaler the demand failed: {exc!r}")

    # -- shutdown --------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every instance, then the node hosts (their forking parents too)."""
        self._closed = True
        await self._tasks.aclose()
        await close_all(self.handles)
        await self._reservations.aclose()
        if self._hosts is not None:
            await self._hosts.shutdown()
        await asyncio.to_thread(disconnect)
