"""The node host: one long-lived actor per Ray node, running cattery's local backend there.

So a start on any node is what it is on one machine: a fork of the agent's pre-imported
parent, listening on the node's own address with its per-instance token. The node host
unpacks agents' code (shipped by content hash), builds their venvs once per node, follows
instances' logs and resource use, and hands them to the control plane in batches
(``take``). It is named and detached: it outlives a control plane that dies, and the
next one finds it again by name (``instances`` lists what runs there).

This module does not import Ray: the actor class is made from ``NodeHost`` by ``hosts``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from loguru import logger

from cattery.backends.base import InstanceFailed, InstanceSpec
from cattery.backends.handles import TERMINAL
from cattery.backends.local import LocalBackend, LocalInstanceHandle, build_environment
from cattery.backends.local.adoption import read_last_lines
from cattery.backends.ray.outbox import Batch, Outbox
from cattery.backends.ray.shipping import unpack
from cattery.backends.walls.policy import Walls
from cattery.contract import LEASE_FILE_ENV, LEASE_SECONDS_ENV, NODE_ADDRESS_ENV

#: how often a node host renews its instances' lease (``lease_seconds`` it lasts)
LEASE_RENEW_SECONDS = 1.0


@dataclass(frozen=True)
class NodeOptions:
    """The control plane's settings a node host runs its local backend with."""

    state_dir: str
    fork: bool = True
    tenant_users: bool = True
    instance_cgroups: bool = True
    allow_shared_tenancy: bool = False
    tenant_uid_base: int = 1_500_000_000
    sample_interval: float = 2.0
    log_retention_seconds: float = 24 * 3600.0
    #: an instance exits once this node host stopped renewing its lease for this long
    lease_seconds: float = 5.0


@dataclass(frozen=True)
class Shipment:
    """Where a spec's code comes from: its bundle's hash, the object holding the archive
    (in a list, so Ray hands over the reference and the node fetches it only when it
    lacks that hash), and the bot's file name when the image names a file."""

    digest: str
    archive: list[Any]
    entry: str = ""


#: how long a new instance is probed on its own; ``ready`` applies the pool's timeout
READY_HORIZON_SECONDS = 3600.0


def ray_node_state(options: NodeOptions, ip: str) -> Path:
    return Path(options.state_dir) / f"node-{ip}"


class NodeHost:
    """Runs instances on this node for the control plane (see the module's docstring)."""

    def __init__(self, node_id: str, ip: str, options: NodeOptions) -> None:
        self.node_id = node_id
        self.ip = ip
        self.options = options
        self.root = ray_node_state(options, ip)
        self._outbox = Outbox()
        self._backend: LocalBackend | None = None
        self._opening = asyncio.Lock()
        self._handles: dict[str, LocalInstanceHandle] = {}
        self._bundle_locks: dict[str, asyncio.Lock] = {}
        self._pythons: dict[str, Path | None] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._readiness: dict[str, asyncio.Future[dict[str, Any]]] = {}
        #: the lease every instance here watches, alone in a folder its walls reveal
        self.lease = self.root / "lease" / "lease"
        self._lease_task: asyncio.Task[None] | None = None
        psutil.cpu_percent()  # starts the window the reports measure over

    async def _local(self) -> LocalBackend:
        async with self._opening:
            if self._backend is None:
                self.root.mkdir(parents=True, exist_ok=True)
                os.chmod(self.root, 0o755)
                walls = await asyncio.to_thread(
                    Walls.probe,
                    self.root,
                    users=self.options.tenant_users,
                    cgroups=self.options.instance_cgroups,
                    allow_shared=self.options.allow_shared_tenancy,
                    uid_base=self.options.tenant_uid_base,
                )
                backend = LocalBackend(
                    self.root,
                    line_sink=self._outbox.line,
                    metrics_sink=self._outbox.sample,
                    sample_interval=self.options.sample_interval,
                    fork=self.options.fork,
                    log_retention=self.options.log_retention_seconds,
                    walls=walls,
                    host=self.ip,
                )
                await backend.start()
                self._backend = backend
                self._start_lease()
            return self._backend

    def _start_lease(self) -> None:
        """Renew the lease while this node host runs: a node host that hangs (or is
        stopped) lets its instances' lease run out, and they exit by themselves."""
        self.lease.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.lease.parent, 0o755)
        self.lease.touch()
        if self._lease_task is None:
            self._lease_task = asyncio.get_running_loop().create_task(self._renew_lease_task())

    async def _renew_lease_task(self) -> None:
        while True:
            try:
                self.lease.touch()
            except OSError as exc:
                logger.warning(f"Renewing the instances' lease failed: {exc!r}")
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    # -- code ----------------------------------------------------------------------------

    async def _localise(self, spec: InstanceSpec, shipment: Shipment) -> InstanceSpec:
        """``spec`` as this node runs it: its code and venv here, not the control plane's."""
        lock = self._bundle_locks.setdefault(shipment.digest, asyncio.Lock())
        async with lock:
            folder = self.root / "bundles" / shipment.digest
            if not folder.is_dir():
                data = await shipment.archive[0]
                folder = await asyncio.to_thread(
                    unpack, data, shipment.digest, self.root / "bundles"
                )
            if spec.python is None:
                python = None
            elif shipment.digest in self._pythons:
                python = self._pythons[shipment.digest]
            else:
                python = await build_environment(
                    folder, self.root / "envs", lambda text: logger.info(text)
                )
                self._pythons[shipment.digest] = python
        image = folder / shipment.entry if shipment.entry else folder
        env = {
            **spec.env,
            NODE_ADDRESS_ENV: self.ip,
            LEASE_FILE_ENV: str(self.lease),
            LEASE_SECONDS_ENV: str(self.options.lease_seconds),
        }
        return dataclasses.replace(spec, image=str(image), python=python, env=env)

    # -- instances -----------------------------------------------------------------------

    async def spawn(self, spec: InstanceSpec, shipment: Shipment) -> dict[str, Any]:
        backend = await self._local()
        handle = await backend.spawn(await self._localise(spec, shipment))
        self._handles[handle.id] = handle
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._readiness[handle.id] = answer
        for coro in (self._watch(handle), self._probe(handle, answer)):
            task = loop.create_task(coro)
            self._watchers.add(task)
            task.add_done_callback(self._watchers.discard)
        return {
            "instance_id": handle.id,
            "address": handle.address,
            "token": handle.token,
            "pid": handle.pid,
            "forked": handle.forked,
        }

    async def _watch(self, handle: LocalInstanceHandle) -> None:
        code = await handle.wait()
        self._outbox.exited(handle.id, code, handle.status.value)

    async def _probe(
        self, handle: LocalInstanceHandle, answer: asyncio.Future[dict[str, Any]]
    ) -> None:
        """Probe the new instance here at once (loopback-fast), while the control plane
        is still reading the spawn's answer; ``ready`` then waits for this probe."""
        try:
            await handle.ready(READY_HORIZON_SECONDS)
        except InstanceFailed as exc:
            answer.set_result({"ok": False, "error": str(exc), "output": exc.output})
        except Exception as exc:
            answer.set_result({"ok": False, "error": f"probing it failed: {exc!r}"})
        else:
            answer.set_result({"ok": True})

    async def ready(self, instance_id: str, timeout: float) -> dict[str, Any]:
        """Whether the instance answered within ``timeout``; a failure comes back as data,
        with the instance's last lines."""
        handle, answer = self._handles.get(instance_id), self._readiness.get(instance_id)
        if handle is None or answer is None:
            return {"ok": False, "error": f"instance {instance_id} is gone", "timeout": False}
        try:
            result = await asyncio.wait_for(asyncio.shield(answer), timeout)
        except TimeoutError:
            handle.kill()
            message = f"instance {instance_id} did not answer /livez within {timeout:g} s"
            return {"ok": False, "error": message, "timeout": True}
        finally:
            if answer.done():
                self._readiness.pop(instance_id, None)
        return {**result, "timeout": False}

    async def drain(self, instance_id: str, timeout: float) -> None:
        handle = self._handles.get(instance_id)
        if handle is not None:
            await handle.drain(timeout)

    async def close(self, instance_id: str, grace: float) -> None:
        handle = self._handles.get(instance_id)
        if handle is not None:
            try:
                await handle.aclose(grace)
            finally:
                self._handles.pop(instance_id, None)
                self._readiness.pop(instance_id, None)

    def kill(self, instance_id: str) -> None:
        handle = self._handles.get(instance_id)
        if handle is not None:
            handle.kill()

    async def prepare(self, spec: InstanceSpec, shipment: Shipment) -> None:
        backend = await self._local()
        await backend.prepare(await self._localise(spec, shipment))

    async def retire(self, agent_key: str) -> None:
        if self._backend is not None:
            await self._backend.retire(agent_key)

    # -- the control plane's view -------------------------------------------------------

    async def report(self) -> dict[str, Any]:
        """The heartbeat: this node's load, and what runs here."""
        memory = psutil.virtual_memory()
        return {
            "node_id": self.node_id,
            "ip": self.ip,
            "pid": os.getpid(),
            "cpu_load": psutil.cpu_percent() / 100.0,
            "memory_available": memory.available,
            "instances": len(self._handles),
        }

    async def take(self, wait: float) -> Batch:
        return await self._outbox.take(wait)

    async def instance_ids(self) -> list[str]:
        """Every instance this node host still holds (running, or exited and not closed)."""
        return list(self._handles)

    async def adopt(self, instance_id: str) -> dict[str, Any] | None:
        """A restarted control plane takes ``instance_id`` back: how it is, or None if this
        node host holds no such instance. One that exited meanwhile is closed here, and
        its last lines tell how its session ended."""
        handle = self._handles.get(instance_id)
        if handle is None:
            return None
        if handle.exit_code is not None or handle.status in TERMINAL:
            await self.close(instance_id, 0)
            return {"exited": True, "last_lines": await self.last_lines(instance_id)}
        return {
            "exited": False,
            "address": handle.address,
            "token": handle.token,
            "pid": handle.pid,
            "forked": handle.forked,
        }

    async def last_lines(self, instance_id: str) -> tuple[str, ...]:
        if not instance_id or "/" in instance_id:
            return ()
        log = self.root / "instances" / f"{instance_id}.log"
        return await asyncio.to_thread(read_last_lines, log)

    async def shutdown(self) -> None:
        """Close every instance and forking parent here (the control plane stops)."""
        if self._backend is not None:
            await self._backend.aclose()
            self._backend = None
        self._handles.clear()
        if self._lease_task is not None:
            self._lease_task.cancel()
            self._lease_task = None

    def ping(self) -> str:
        return self.node_id
