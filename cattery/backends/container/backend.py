"""The container backend: each instance is a container of the agent's image.

Any image that serves the pipecat-base contract on port 8080 works: cattery-base images and
images built on ``dailyco/pipecat-base`` alike. The port is published on loopback only,
secrets arrive as environment variables, and the agent profile sets CPU and memory limits.
Containers carry the labels of the control plane that made them, so a restarted one can
clear what a crash left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import uuid
from pathlib import Path

from docker.errors import DockerException
from docker.models.containers import Container
from loguru import logger

from cattery.backends.base import InstanceFailed, InstanceSpec, LineSink, MetricsSink
from cattery.backends.container.engine import Engine
from cattery.backends.container.handle import ContainerInstanceHandle
from cattery.backends.handles import close_all
from cattery.backends.profiles import limits_for
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
            "CATTERY_INSTANCE_TOKEN": token,
            "CATTERY_ONE_SESSION": "1",
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

    async def start(self) -> None:
        """Remove containers an earlier control plane on this state folder left behind."""
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

    async def spawn(self, spec: InstanceSpec) -> ContainerInstanceHandle:
        """Create and start a container for ``spec``; return at once (STARTING)."""
        if self._closed:
            raise RuntimeError("the container backend is closed")
        instance_id = "inst_" + uuid.uuid4().hex
        token = secrets.token_urlsafe(32)
        limits = spec.limits or limits_for(spec.profile)
        try:
            await self.engine.ensure_image(spec.image, spec.pull_auth)
            container = await self.engine.call(
                lambda: self.engine.client.containers.run(
                    spec.image,
                    detach=True,
                    name=f"cattery-{instance_id}",
                    environment=container_env(spec, token),
                    ports={f"{CONTAINER_PORT}/tcp": (self._publish_host, None)},
                    labels={
                        LABEL_OWNER: self._owner,
                        LABEL_INSTANCE: instance_id,
                        LABEL_AGENT: spec.agent_key,
                        LABEL_DEPLOYMENT: spec.deployment_id,
                    },
                    volumes=({spec.mount: {"bind": "/app", "mode": "ro"}} if spec.mount else None),
                    nano_cpus=limits.nano_cpus,
                    mem_limit=limits.memory_bytes,
                    init=True,  # signals reach the server; zombies are reaped
                )
            )
        except (DockerException, CatteryError) as exc:
            raise InstanceFailed(f"could not start a container of {spec.image}: {exc}") from exc
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
