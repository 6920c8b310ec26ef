"""Turning a deployment record into a running pool: environment, secrets, warm instances.

Deploys return at once; the work happens in owned tasks, and ``status`` tells the CLI
(which polls) when the deployment is ready or why it failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from loguru import logger

from cattery.backends.base import InstanceSpec, PullAuth
from cattery.backends.container import ContainerBackend
from cattery.backends.profiles import Limits
from cattery.control.images import (
    ImageSource,
    dependency_file,
    prepare_environment,
    resolve_image,
)
from cattery.errors import CatteryError, InvalidRequest
from cattery.pools import PoolManager, PoolOptions
from cattery.settings import Settings


@dataclass
class DeployStatus:
    ready: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class DeployPlan:
    agent_key: str
    deployment_id: str
    image: str
    min_agents: int
    max_agents: int
    profile: str
    secrets: Mapping[str, str] = field(repr=False)
    pull_auth: PullAuth | None = field(default=None, repr=False)
    #: the Session API passes cookies both ways for this deployment (off by default)
    session_cookies: bool = False
    #: the resources the deployment resolved (its profile's, or its own)
    limits: Limits | None = None
    #: Krisp VIVA's model family (``tel``, ``pro``) the bot's ``KrispVivaFilter`` loads
    krisp_viva_audio_filter: str | None = None


#: what Pipecat's development runner (``python bot.py``) puts in its bots' environment
DEV_RUNNER_ENV = {"ENV": "local"}

SecretsLoader = Callable[[], Awaitable[Mapping[str, str]]]


class Deployer:
    def __init__(
        self,
        settings: Settings,
        pools: PoolManager,
        containers: ContainerBackend | None = None,
    ) -> None:
        self._settings = settings
        self._pools = pools
        self._containers = containers
        self._status: dict[str, DeployStatus] = {}
        self._cookie_deployments: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def status(self, deployment_id: str | None) -> DeployStatus:
        if deployment_id is None:
            return DeployStatus()
        return self._status.setdefault(deployment_id, DeployStatus())

    def passes_cookies(self, deployment_id: str) -> bool:
        """Whether the Session API passes cookies both ways for this deployment's sessions."""
        return deployment_id in self._cookie_deployments

    def resolve(self, image: str) -> ImageSource:
        """What ``image`` names, or a 400 before anything is written."""
        return resolve_image(image, containers=self._containers is not None)

    async def check_image(self, image: str, pull_auth: PullAuth | None) -> ImageSource:
        """Resolve ``image`` and, when it runs as containers, have the engine hold the image
        (pulling it with ``pull_auth`` if needed) and start one container of it the way
        instances start: a deploy fails here, with nothing written, when the image is
        missing or malformed, or the engine is down or can't run it."""
        source = self.resolve(image)
        if source.reference is not None and self._containers is not None:
            await self._containers.check(
                InstanceSpec("cattery/check", "check", source.reference, pull_auth=pull_auth)
            )
        if source.folder is not None and self._settings.backend == "container":
            if self._containers is None:
                raise InvalidRequest(
                    "The container backend needs a container engine: "
                    "set CATTERY_CONTAINER__ENGINE_URL"
                )
            base = self._settings.container.base_image
            await self._containers.check(
                InstanceSpec("cattery/check", "check", base, mount=str(source.folder))
            )
        return source

    def activate(self, plan: DeployPlan) -> None:
        """Build the environment and (re)configure the agent's pool in the background."""
        self._status[plan.deployment_id] = DeployStatus()
        if plan.session_cookies:
            self._cookie_deployments.add(plan.deployment_id)
        task = asyncio.create_task(self._activate(plan), name=f"deploy-{plan.deployment_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _activate(self, plan: DeployPlan) -> None:
        status = self._status[plan.deployment_id]
        try:
            spec = await self._spec(plan)
            defaults = self._settings.pools
            options = PoolOptions(
                min_agents=plan.min_agents,
                max_agents=plan.max_agents,
                cooldown_seconds=defaults.cooldown_seconds,
                start_timeout=defaults.start_timeout,
            )
            await self._pools.ensure(plan.agent_key, spec, options)
            status.ready = True
            logger.info(f"Deployment {plan.deployment_id} of {plan.agent_key} is ready")
        except CatteryError as exc:
            status.errors.append({"code": exc.code, "message": exc.message})
        except Exception as exc:
            logger.opt(exception=exc).error(f"Deployment {plan.deployment_id} failed")
            status.errors.append({"code": "DEPLOYMENT_FAILED", "message": str(exc)})

    async def _spec(self, plan: DeployPlan) -> InstanceSpec:
        """Where and how the deployment's instances run."""
        source = self.resolve(plan.image)
        env = {**self._instance_env(), **self._krisp_env(plan), **plan.secrets}
        common = {
            "agent_key": plan.agent_key,
            "deployment_id": plan.deployment_id,
            "profile": plan.profile,
            "limits": plan.limits,
        }
        if source.reference is not None:
            return InstanceSpec(
                **common,
                image=source.reference,
                env=env,
                backend="container",
                pull_auth=plan.pull_auth,
            )
        assert source.folder is not None
        if self._settings.backend == "container":
            if dependency_file(source.folder) is not None:
                logger.warning(
                    f"{source.folder} lists dependencies; a mounted folder runs on "
                    f"{self._settings.container.base_image} as it is: build an image instead"
                )
            return InstanceSpec(
                **common,
                image=self._settings.container.base_image,
                env=env,
                backend="container",
                mount=str(source.folder),
            )
        extra_env = await prepare_environment(source.folder, self._settings.state_dir / "envs")
        return InstanceSpec(**common, image=str(source.folder), env={**env, **extra_env})

    def _krisp_env(self, plan: DeployPlan) -> dict[str, str]:
        """Krisp VIVA, as the Pipecat Cloud base image offers it: ``KrispVivaFilter()``
        reads its model from ``KRISP_VIVA_FILTER_MODEL_PATH``; here the models are the
        operator's (``CATTERY_KRISP_VIVA_MODELS``)."""
        if not plan.krisp_viva_audio_filter:
            return {}
        model = self._settings.krisp_viva_models.get(plan.krisp_viva_audio_filter)
        if model is None:
            logger.warning(
                f"{plan.agent_key} asks for Krisp VIVA {plan.krisp_viva_audio_filter!r} and "
                "CATTERY_KRISP_VIVA_MODELS names no model for it"
            )
            return {}
        return {"KRISP_VIVA_FILTER_MODEL_PATH": model}

    def _instance_env(self) -> dict[str, str]:
        """What every instance gets from the control plane's settings (an agent's own wins).

        Under ``cattery dev`` that includes ``ENV=local``, which Pipecat's development
        runner sets for its bots (they skip cloud-only parts, such as Krisp, on it)."""
        env = {"CATTERY_ICE_FALLBACK_URLS": ",".join(self._settings.ice_urls)}
        if self._settings.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self._settings.otlp_endpoint.rstrip("/")
            env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
        if self._settings.dev.agent is not None:
            env.update(DEV_RUNNER_ENV)
        return env

    async def wait(self, deployment_id: str) -> DeployStatus:
        """For callers that need the pool (a start right after boot): wait for activation."""
        while True:
            status = self.status(deployment_id)
            if status.ready or status.errors or not self._tasks:
                return status
            await asyncio.sleep(0.05)

    async def remove(self, agent_key: str) -> None:
        await self._pools.remove(agent_key)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
