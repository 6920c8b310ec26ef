"""The container backend: each instance is a container of the agent's image.

Any image that serves the pipecat-base contract on port 8080 works: cattery-base images and
images built on ``dailyco/pipecat-base`` alike. The port is published on loopback only,
secrets arrive as environment variables, and the agent profile sets CPU and memory limits.
Containers carry the labels of the control plane that made them, so a restarted one can
clear what a crash left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from pathlib import Path

from docker.errors import DockerException
from docker.models.containers import Container
from loguru import logger

from cattery.backends.base import InstanceFailed, InstanceSpec, LineSink, MetricsSink
from cattery.backends.container.engine import Engine, EngineUnavailable
from cattery.backends.container.handle import ContainerInstanceHandle
from cattery.backends.handles import close_all
from cattery.backends.profiles import limits_for
from cattery.contract import INSTANCE_TOKEN_ENV, ONE_SESSION_ENV
from cattery.errors import CatteryError

CONTAINER_PORT = 8080
LABEL_OWNER = "dev.cattery.owner"
LABEL_INSTANCE = "dev.cattery.instance"
LABEL_AGENT = "dev.cattery.agent"
LABEL_DEPLOYMENT = "dev.cattery.deployment"


def owner_label(state_dir: Path) -> str:
    """Which control plane made a container: one per state folder."""
    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]


def container_env(spec: InstanceSpec, token: str) -> dict[str, str]:
    """The agent's environment (secrets included), then what the runtime contract needs."""
    env = dict(spec.env)
    env.pop("PYTHONPATH", None)  # a local overlay path; it means nothing in an image
    env.update(
        {
            "PORT": str(CONTAINER_PORT),
            "PYTHONUNBUFFERED": "1",
            INSTANCE_TOKEN_ENV: token,
            ONE_SESSION_ENV: "1",
        }
    )
    return env


class ContainerBackend:
    """Makes instances as containers; owns each handle until it is closed."""

    def __init__(
        self,
        engine: Engine,
        state_dir: Path,
        line_sink: LineSink,
        metrics_sink: MetricsSink,
        sample_interval: float = 2.0,
        publish_host: str = "127.0.0.1",
    ) -> None:
        self.engine = engine
        self._owner = owner_label(state_dir)
        self._line_sink = line_sink
        self._metrics_sink = metrics_sink
        self._sample_interval = sample_interval
        self._publish_host = publish_host
        self._handles: dict[str, ContainerInstanceHandle] = {}
        self._closed = False

    @property
    def handles(self) -> list[ContainerInstanceHandle]:
        return list(self._handles.values())

    async def start(self, check_image: str | None = None) -> None:
        """Remove containers an earlier control plane on this state folder left behind,
        then check that the engine can run ``check_image`` as instances run (logged: image
        deploys check again and fail with the engine's reason)."""
        await self._remove_leftovers()
        if check_image is None:
            return
        try:
            await self.engine.call(lambda: self.engine.client.images.get(check_image))
        except (DockerException, CatteryError):
            return  # nothing to check with yet (no pull at start)
        try:
            await self.check(InstanceSpec("cattery/check", "check", check_image))
        except EngineUnavailable as exc:
            logger.error(f"{exc.message}; image agents will not run until this is fixed")
        except CatteryError as exc:
            logger.info(f"Container engine not checked at start: {exc.message}")

    async def _remove_leftovers(self) -> None:
        try:
            leftovers = await self.engine.call(
                lambda: self.engine.client.containers.list(
                    all=True, filters={"label": f"{LABEL_OWNER}={self._owner}"}
                )
            )
        except CatteryError as exc:
            logger.warning(f"Container engine not reachable at start: {exc.message}")
            return
        for container in leftovers:
            logger.info(f"Removing container {container.name} left by an earlier control plane")
            try:
                await self.engine.call(container.remove, force=True)
            except DockerException as exc:
                logger.error(f"Removing {container.name} failed: {exc}")

    def _run_options(self, spec: InstanceSpec, name: str, labels: dict[str, str]) -> dict:
        """How every container of ``spec`` is run: the same for instances and probes."""
        limits = spec.limits or limits_for(spec.profile)
        return {
            "detach": True,
            "name": name,
            "ports": {f"{CONTAINER_PORT}/tcp": (self._publish_host, None)},
            "labels": {LABEL_OWNER: self._owner, **labels},
            "volumes": ({spec.mount: {"bind": "/app", "mode": "ro"}} if spec.mount else None),
            "nano_cpus": limits.nano_cpus,
            "mem_limit": limits.memory_bytes,
            "init": True,  # signals reach the server; zombies are reaped
        }

    async def check(self, spec: InstanceSpec) -> None:
        """Create and start one container of ``spec`` with the options instances get, then
        remove it: ``EngineUnavailable`` with the engine's reason when it can't (no init
        binary, no OCI runtime, no network), so a deploy fails instead of its instances."""
        name = f"cattery-check-{uuid.uuid4().hex[:12]}"
        options = self._run_options(spec, name, {LABEL_AGENT: spec.agent_key})
        container: Container | None = None
        try:
            await self.engine.ensure_image(spec.image, spec.pull_auth)
            container = await self._run(spec.image, {"PORT": str(CONTAINER_PORT)}, options)
        except DockerException as exc:
            reason = getattr(exc, "explanation", None) or exc
            raise EngineUnavailable(
                f"The container engine at {self.engine.url} cannot start a container of "
                f"{spec.image} with the options cattery uses: {reason}"
            ) from exc
        finally:
            await self._remove_quietly(container, name)

    async def _run(self, image: str, environment: dict[str, str], options: dict) -> Container:
        """Create and start a container in a worker thread. If the caller is cancelled
        meanwhile (a pool closing), the container the engine still makes is removed: the
        thread can't be stopped, and nothing else would ever own that container."""
        made = asyncio.ensure_future(
            self.engine.call(
                lambda: self.engine.client.containers.run(image, environment=environment, **options)
            )
        )
        try:
            return await asyncio.shield(made)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                orphan = await made
                await self.engine.call(orphan.remove, force=True)
            raise

    async def _remove_quietly(self, container: Container | None, name: str) -> None:
        """Remove a probe container, made or half-made (podman may keep a created one)."""
        try:
            if container is not None:
                await self.engine.call(container.remove, force=True)
                return
            found = await self.engine.call(
                lambda: self.engine.client.containers.list(all=True, filters={"name": name})
            )
            for leftover in found:
                await self.engine.call(leftover.remove, force=True)
        except (DockerException, CatteryError) as exc:
            logger.warning(f"Removing the check container {name} failed: {exc}")

    async def spawn(self, spec: InstanceSpec) -> ContainerInstanceHandle:
        """Create and start a container for ``spec``; return at once (STARTING)."""
        if self._closed:
            raise RuntimeError("the container backend is closed")
        instance_id = "inst_" + uuid.uuid4().hex
        token = secrets.token_urlsafe(32)
        labels = {
            LABEL_INSTANCE: instance_id,
            LABEL_AGENT: spec.agent_key,
            LABEL_DEPLOYMENT: spec.deployment_id,
        }
        try:
            options = self._run_options(spec, f"cattery-{instance_id}", labels)
            await self.engine.ensure_image(spec.image, spec.pull_auth)
            container = await self._run(spec.image, container_env(spec, token), options)
        except (DockerException, CatteryError) as exc:
            reason = getattr(exc, "explanation", None) or exc
            raise InstanceFailed(f"could not start a container of {spec.image}: {reason}") from exc
        try:
            port = await self._published_port(container)
        except BaseException:
            await self.engine.call(container.remove, force=True)
            raise
        handle = ContainerInstanceHandle(
            instance_id=instance_id,
            spec=spec,
            engine=self.engine,
            container=container,
            port=port,
            host=self._publish_host,
            token=token,
            line_sink=self._line_sink,
            metrics_sink=self._metrics_sink,
            sample_interval=self._sample_interval,
            on_closed=self._forget,
        )
        self._handles[instance_id] = handle
        logger.bind(**handle.log_context()).info(
            f"Started container {container.name} on {self._publish_host}:{port}"
        )
        return handle

    async def _published_port(self, container: Container) -> int:
        """The host port the engine chose for the container's 8080."""
        for _ in range(50):
            await self.engine.call(container.reload)
            bindings = (container.ports or {}).get(f"{CONTAINER_PORT}/tcp")
            if bindings:
                return int(bindings[0]["HostPort"])
            await asyncio.sleep(0.05)
        raise InstanceFailed(f"the engine published no port for {CONTAINER_PORT}/tcp")

    def _forget(self, handle: ContainerInstanceHandle) -> None:
        self._handles.pop(handle.id, None)

    async def aclose(self) -> None:
        """Stop and remove every container this backend still owns. Idempotent."""
        self._closed = True
        await close_all(self.handles)
        self.engine.close()
