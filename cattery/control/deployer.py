"""Turning a deployment record into a running pool: environment, secrets, warm instances.

Deploys return at once; the work happens in owned tasks, and ``status`` tells the CLI
(which polls) when the deployment is ready or why it failed. What a deployment goes
through (its environment's build, uv's output, a fallback to plain processes) is also
written to the agent's logs and, where it lasts, to the deployment record.

A deployment is ready only once one of its instances has started (the probe): a bot that
fails to import, or whose instance dies before it answers, fails its deploy within
seconds, with the instance's last lines as the error and its output as the deployment's
log lines, and the agent's pool keeps serving the previous deployment. The store says so
too: a deployment becomes its agent's active one once it is ready (the first one of an
agent at once), and a failed one keeps its error. A restart activates the active one the
same way, probe included, so an agent whose instances can no longer start (an engine that
stopped running containers) is never shown ready.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cattery.backends.base import (
    InstanceFailed,
    InstanceHandle,
    InstanceSpec,
    Preparing,
    PullAuth,
)
from cattery.backends.container import ContainerBackend
from cattery.backends.local import EnvironmentBuildFailed, build_environment
from cattery.backends.profiles import Limits
from cattery.contract import ICE_FALLBACK_URLS_ENV, OTLP_ENDPOINT_ENV, OTLP_PROTOCOL_ENV
from cattery.control.images import ImageSource, dependency_file, resolve_image
from cattery.control.logrouter import InstanceContext
from cattery.errors import CatteryError, InvalidRequest
from cattery.pools import PoolManager, PoolOptions
from cattery.settings import Settings
from cattery.store import repositories as repo
from cattery.tasks import OwnedTasks

ENVIRONMENT_FAILED = "ENVIRONMENT_BUILD_FAILED"


class Phase:
    """Where a deployment is, as ``agent status`` shows it (``currentRevision.phase``)."""

    PENDING = "Pending"
    BUILDING = "Building environment"
    STARTING = "Starting"
    READY = "Ready"
    FAILED = "Failed"


@dataclass
class DeployStatus:
    ready: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)
    phase: str = Phase.PENDING
    #: why the instances are plain processes rather than forks (None: forked, or not local)
    plain_processes: str | None = None


class DeploymentLog(Protocol):
    def deployment_line(
        self, organization_id: str, agent_id: str, deployment_id: str, level: str, text: str
    ) -> None: ...

    def bind(self, instance_id: str, context: InstanceContext) -> None: ...

    def unbind(self, instance_id: str) -> None: ...


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
    #: whose deployment it is, for the lines it writes to the agent's logs
    organization_id: str = ""
    agent_id: str = ""
    agent_name: str = ""
    #: the region its instances must run in (a cluster's nodes labelled with it)
    region: str | None = None


#: what Pipecat's development runner (``python bot.py``) puts in its bots' environment
DEV_RUNNER_ENV = {"ENV": "local"}

#: the deployment error of a bot whose first instance did not start
DEPLOY_FAILED = "DEPLOYMENT_FAILED"
#: the error of a deployment a control plane restart came before it was ready
DEPLOY_INTERRUPTED = "DEPLOYMENT_INTERRUPTED"
#: how long a probe that started may take to stop again
PROBE_CLOSE_GRACE_SECONDS = 2.0


class Deployer:
    def __init__(
        self,
        settings: Settings,
        pools: PoolManager,
        containers: ContainerBackend | None = None,
        *,
        log: DeploymentLog | None = None,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        no_forking: str | None = None,
        on_active: Callable[[DeployPlan], None] | None = None,
    ) -> None:
        """``no_forking``: why the local backend forks no instance at all, if it doesn't.
        ``on_active``: told when a ready deployment became its agent's active one."""
        self._settings = settings
        self._pools = pools
        self._containers = containers
        self._log = log
        self._sessionmaker = sessionmaker
        self._no_forking = no_forking
        self._on_active = on_active
        self._plans: dict[str, DeployPlan] = {}
        self._records = OwnedTasks("deployment records")
        self._status: dict[str, DeployStatus] = {}
        self._cookie_deployments: set[str] = set()
        self._tasks = OwnedTasks("deployer")

    def status(self, deployment_id: str | None) -> DeployStatus:
        if deployment_id is None:
            return DeployStatus()
        return self._status.setdefault(deployment_id, DeployStatus())

    def passes_cookies(self, deployment_id: str) -> bool:
        """Whether the Session API passes cookies both ways for this deployment's sessions."""
        return deployment_id in self._cookie_deployments

    def resolve(self, image: str) -> ImageSource:
        """What ``image`` names, or a 400 before anything is written."""
        return resolve_image(
            image,
            containers=self._containers is not None,
            roots=self._settings.agent_root_folders,
        )

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
        self._plans[plan.deployment_id] = plan
        if plan.session_cookies:
            self._cookie_deployments.add(plan.deployment_id)
        self._tasks.spawn(self._activate(plan), "deploy_task")

    async def _activate(self, plan: DeployPlan) -> None:
        status = self._status[plan.deployment_id]
        try:
            spec = await self._spec(plan, status)
            status.phase = Phase.STARTING
            defaults = self._settings.pools
            options = PoolOptions(
                min_agents=plan.min_agents,
                max_agents=plan.max_agents,
                cooldown_seconds=defaults.cooldown_seconds,
                start_timeout=defaults.start_timeout,
            )
            if spec.backend == "local" and self._no_forking is not None:
                self.plain_processes(spec, self._no_forking, level="INFO")
            probe = await self._probe(plan, spec, defaults.start_timeout)
            warm: InstanceHandle | None = probe
            if plan.min_agents == 0:  # nobody asked for a warm instance: don't keep one
                warm = None
                await probe.aclose(grace=PROBE_CLOSE_GRACE_SECONDS)
                if self._log is not None:
                    self._log.unbind(probe.id)
            await self._pools.ensure(plan.agent_key, spec, options, warm=warm)
            await self._record_ready(plan)
            status.ready = True
            status.phase = Phase.READY
            logger.info(f"Deployment {plan.deployment_id} of {plan.agent_key} is ready")
            self._line(plan, "INFO", "Deployment is ready")
        except CatteryError as exc:
            self._failed(plan, status, exc.code, exc.message)
        except Exception as exc:
            logger.opt(exception=exc).error(f"Deployment {plan.deployment_id} failed")
            self._failed(plan, status, "DEPLOYMENT_FAILED", str(exc))

    async def _probe(self, plan: DeployPlan, spec: InstanceSpec, timeout: float) -> InstanceHandle:
        """One instance of ``spec``, started and answering; the deploy's error if it can't."""
        backend = self._pools.backend
        if isinstance(backend, Preparing):
            await backend.prepare(spec)  # a forking parent first, as the pool would
        try:
            handle = await backend.spawn(spec)
        except InstanceFailed as exc:
            message = f"The bot's instance did not start: {exc}"
            raise CatteryError(message, code=DEPLOY_FAILED) from exc
        try:
            await handle.ready(timeout)
        except InstanceFailed as exc:
            await handle.aclose(grace=0)
            self._keep_output(plan, handle.id)
            output = exc.output or str(exc)
            raise CatteryError(
                f"The bot failed to start; its last lines:\n{output}", code=DEPLOY_FAILED
            ) from exc
        except BaseException:
            await handle.aclose(grace=0)
            raise
        return handle

    def _keep_output(self, plan: DeployPlan, instance_id: str) -> None:
        """A failed probe's output is kept as the deployment's log lines (``agent logs``)."""
        if self._log is not None and plan.agent_id:
            context = InstanceContext(plan.organization_id, plan.agent_id, plan.deployment_id)
            self._log.bind(instance_id, context)

    def _failed(self, plan: DeployPlan, status: DeployStatus, code: str, message: str) -> None:
        status.phase = Phase.FAILED
        status.errors.append({"code": code, "message": message})
        self._line(plan, "ERROR", f"Deployment failed: {code}: {message}")
        if self._sessionmaker is not None:
            self._records.spawn(self._record_failed(plan, code, message), "record_task")

    async def _record_failed(self, plan: DeployPlan, code: str, message: str) -> None:
        """The error stays with the deployment: ``agent status`` shows it after a restart."""
        assert self._sessionmaker is not None
        async with self._sessionmaker.begin() as db:
            await repo.set_deployment_outcome(
                db, plan.deployment_id, failed_code=code, failed_message=message
            )

    async def _record_ready(self, plan: DeployPlan) -> None:
        """The deployment serves: it is its agent's active one from now on (unless a newer
        deploy came meanwhile), and an error of an earlier try is gone."""
        if self._sessionmaker is None or not plan.agent_id:
            return
        try:
            async with self._sessionmaker.begin() as db:
                await repo.set_deployment_outcome(
                    db, plan.deployment_id, failed_code=None, failed_message=None
                )
                agent = await repo.get_agent_by_id(db, plan.agent_id)
                latest = await repo.latest_deployment(db, plan.agent_id)
                promote = (
                    agent is not None
                    and agent.deleted_at is None
                    and agent.active_deployment_id != plan.deployment_id
                    and latest is not None
                    and latest.id == plan.deployment_id
                )
                if promote:
                    assert agent is not None
                    await repo.set_active_deployment(db, agent, plan.deployment_id)
        except Exception as exc:
            logger.opt(exception=exc).error(f"Failed to record deployment {plan.deployment_id}")
            return
        if promote and self._on_active is not None:
            self._on_active(plan)

    def plain_processes(self, spec: InstanceSpec, reason: str, level: str = "WARNING") -> None:
        """The backend runs ``spec``'s instances as plain processes: say so, with why, in
        the deployment's status, its record and the agent's logs."""
        status = self.status(spec.deployment_id)
        status.plain_processes = reason
        plan = self._plans.get(spec.deployment_id)
        if plan is not None:
            self._line(
                plan,
                level,
                f"Instances run as plain processes, not forked (starts take seconds): {reason}",
            )
        if self._sessionmaker is not None:
            self._records.spawn(self._record_plain(spec.deployment_id, reason), "record_task")

    async def _record_plain(self, deployment_id: str, reason: str) -> None:
        assert self._sessionmaker is not None
        async with self._sessionmaker.begin() as db:
            await repo.set_deployment_plain_processes(db, deployment_id, reason)

    async def _record_environment(self, deployment_id: str, python: Path | None) -> None:
        if self._sessionmaker is None:
            return
        async with self._sessionmaker.begin() as db:
            dep = await repo.get_deployment(db, deployment_id)
            if dep is not None:
                await repo.set_deployment_environment(db, dep, str(python) if python else None)

    def _line(self, plan: DeployPlan, level: str, text: str) -> None:
        """A line in the agent's logs, about this deployment."""
        logger.bind(agent=plan.agent_key).log(level, f"Deployment {plan.deployment_id}: {text}")
        if self._log is not None and plan.agent_id:
            self._log.deployment_line(
                plan.organization_id, plan.agent_id, plan.deployment_id, level, text
            )

    async def _spec(self, plan: DeployPlan, status: DeployStatus) -> InstanceSpec:
        """Where and how the deployment's instances run."""
        source = self.resolve(plan.image)
        env = {**self._instance_env(), **self._krisp_env(plan), **plan.secrets}
        common = {
            "agent_key": plan.agent_key,
            "deployment_id": plan.deployment_id,
            "profile": plan.profile,
            "limits": plan.limits,
            "region": plan.region,
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
        python = await self._environment(plan, status, source.folder)
        return InstanceSpec(**common, image=str(source.folder), env=env, python=python)

    async def _environment(
        self, plan: DeployPlan, status: DeployStatus, folder: Path
    ) -> Path | None:
        """The folder's own venv (``backends.local.venvs``), built or reused; its progress
        and uv's output go to the agent's logs."""
        if dependency_file(folder) is None:
            return None
        status.phase = Phase.BUILDING
        started = asyncio.get_running_loop().time()
        envs = self._settings.state_dir / "envs"
        try:
            python = await build_environment(folder, envs, lambda t: self._line(plan, "INFO", t))
        except EnvironmentBuildFailed as exc:
            message = f"Building the agent's environment failed: {exc}"
            raise InvalidRequest(message, code=ENVIRONMENT_FAILED) from exc
        took = asyncio.get_running_loop().time() - started
        self._line(plan, "INFO", f"Environment took {took:.1f} s")
        await self._record_environment(plan.deployment_id, python)
        return python

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
        env = {ICE_FALLBACK_URLS_ENV: ",".join(self._settings.ice_urls)}
        if self._settings.otlp_endpoint:
            env[OTLP_ENDPOINT_ENV] = self._settings.otlp_endpoint.rstrip("/")
            env[OTLP_PROTOCOL_ENV] = "http/protobuf"
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
        await self._tasks.aclose()
        await self._records.wait_all()
        await self._records.aclose()
