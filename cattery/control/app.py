"""``create_app(settings)``: the control plane, with everything it owns made in its lifespan."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx
from fastapi import FastAPI
from loguru import logger

from cattery.backends.base import Backend
from cattery.backends.container import ContainerBackend, Engine
from cattery.backends.local import LocalBackend
from cattery.backends.router import BackendRouter
from cattery.backends.walls.policy import Walls
from cattery.control import agents, dashboard, dev
from cattery.control.api.private import (
    builds,
    organization,
    profiles,
    regions,
    secrets,
    self_hosted,
    services,
    sessions,
)
from cattery.control.api.private import metrics as metrics_route
from cattery.control.api.public import nodes, proxy, start, webhooks
from cattery.control.api.public.telephony import build_router as media_websockets
from cattery.control.bootstrap import bootstrap
from cattery.control.builds import BuildService
from cattery.control.deployer import Deployer
from cattery.control.logrouter import LogRouter
from cattery.control.lookups import Lookups
from cattery.control.metrics import ControlMetrics
from cattery.control.openapi import install_openapi
from cattery.control.recorder import InstanceRecorder, StoreRecorder
from cattery.control.recovery import recover
from cattery.control.session_webhooks import SessionWebhooks
from cattery.control.state import ControlState
from cattery.control.supervisor import SessionSupervisor
from cattery.control.tracing import Tracing
from cattery.error_handlers import install_error_handlers
from cattery.files import private_dir, private_file
from cattery.pools import PoolManager
from cattery.pools.options import EveryListener
from cattery.settings import Settings
from cattery.store.crypto import SecretBox, load_or_create_key_file
from cattery.store.db import create_engine, sessionmaker
from cattery.store.journal import JOURNAL_NAME, StartJournal
from cattery.store.migrate import migrate

#: SQLite's files beside the database, in WAL mode
WAL_FILES = ("-wal", "-shm")

ANNOUNCE = """
cattery is running on {url}
  organization: {org}
  admin token (shown once; store it now): {token}

Point the official CLI at it (the pipecat and cattery commands are in {bin}:
`source {bin}/activate` puts them on your PATH):
  export PIPECAT_API_HOST={url}
  export PIPECAT_TOKEN={token}
or write ~/.config/pipecatcloud/pipecatcloud.toml:
  token = "{token}"
  org = "{org}"

The dashboard: {url}/dashboard/  (log in with the admin token)
"""


@dataclass(frozen=True)
class Seams:
    """What an in-process test puts in place of the outside: more backends by name, beside
    the ones the settings make (specs naming them run there), and the client sessions are
    dispatched to instances with (a stand-in for their runtimes)."""

    backends: Mapping[str, Backend] = field(default_factory=dict)
    instance_http: httpx.AsyncClient | None = None


def create_app(settings: Settings, *, seams: Seams | None = None) -> FastAPI:
    app = FastAPI(title="cattery", lifespan=_lifespan(settings, seams or Seams()))
    install_error_handlers(app)
    install_openapi(app)
    # the public routes first: every start and Session API call is matched against the
    # routes ahead of its own, and these are the ones on the hot path
    modules = (
        start,
        proxy,
        services,
        sessions,
        secrets,
        organization,
        regions,
        builds,
        profiles,
        self_hosted,
        webhooks,
        nodes,
        metrics_route,
    )
    for module in modules:
        app.include_router(module.build_router())
    dashboard.install(app)
    if settings.dev.agent:  # cattery dev: Pipecat's development runner's routes, no key
        app.include_router(dev.build_router())  # first: its /ws/{token} before /ws/{carrier}
    app.include_router(media_websockets())  # carriers' and generic clients' WebSockets

    app.add_middleware(start.StartShortcut)  # every start's short way in

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _lifespan(settings: Settings, seams: Seams):
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = await _open(settings, seams)
        app.state.control = state
        try:
            if state.admin_token_created:
                url = f"http://{settings.host}:{settings.port}"
                print(
                    ANNOUNCE.format(
                        url=url,
                        org=settings.organization,
                        token=state.admin_token_created,
                        bin=Path(sys.executable).parent,
                    ),
                    flush=True,
                )
            logger.info(f"Dashboard: http://{settings.host}:{settings.port}/dashboard/")
            await _recover(state)
            await agents.activate_deployed(state)
            await agents.deploy_bundled(state)
            yield
        finally:
            await _close(state)

    return lifespan


async def _open(settings: Settings, seams: Seams) -> ControlState:
    private_dir(settings.state_dir)
    key = (
        settings.secret_key.get_secret_value()
        if settings.secret_key
        else load_or_create_key_file(settings.key_file)
    )
    box = SecretBox(key)
    url = settings.resolved_database_url
    if settings.database_url is None:  # our own SQLite file (new WAL files take its mode)
        database = settings.state_dir / "cattery.db"
        for path in (database, *(database.with_name(database.name + s) for s in WAL_FILES)):
            if path == database or path.exists():
                private_file(path)
    await migrate(url)
    engine = create_engine(url)
    maker = sessionmaker(engine)
    async with maker.begin() as db:
        boot = await bootstrap(db, settings)
    instances = InstanceRecorder(maker, box)
    metrics = ControlMetrics()
    journal = StartJournal(settings.state_dir / JOURNAL_NAME)
    recorder = StoreRecorder(maker, instances, journal, metrics)
    router = LogRouter(
        writer=recorder.write_logs,
        max_session_lines=settings.log_max_session_lines,
        max_session_bytes=settings.log_max_session_bytes,
        pruner=lambda: recorder.prune_logs(timedelta(days=settings.log_retention_days)),
    )
    router.start()
    walls = await asyncio.to_thread(
        Walls.probe,
        settings.state_dir,
        users=settings.tenant_users,
        cgroups=settings.instance_cgroups,
        allow_shared=settings.allow_shared_tenancy,
        uid_base=settings.tenant_uid_base,
    )
    backend = LocalBackend(
        settings.state_dir,
        line_sink=router.line,
        metrics_sink=router.sample,
        sample_interval=settings.instance_sample_interval,
        fork=settings.backend_fork,
        parent_idle_seconds=settings.parent_idle_seconds,
        log_retention=settings.instance_log_retention_hours * 3600,
        walls=walls,
    )
    await backend.start()
    containers = await _open_containers(settings, router)
    cluster = await _open_cluster(settings, router)
    # with a cluster, folder agents run on its nodes (each node runs a local backend)
    backends: dict[str, Backend] = {"local": cluster or backend}
    if containers is not None:
        backends["container"] = containers
    backends.update(seams.backends)
    backend_router = BackendRouter(backends)
    webhooks = SessionWebhooks(maker, box, settings.webhooks, flush_logs=router.flush)
    webhooks.start()
    supervisor = SessionSupervisor(router, recorder, metrics, webhooks, seams.instance_http)
    pools = PoolManager(backend_router, events=EveryListener(supervisor.instance_events, instances))
    metrics.watch(pools, supervisor.active_agent_keys)
    build_service = BuildService(settings, maker, settings.container.engine_url)
    await build_service.start()
    no_forking = None
    if not backend.forking:
        no_forking = (
            "forking is off (CATTERY_BACKEND_FORK=0)"
            if not settings.backend_fork
            else f"forking is not supported on {sys.platform}"
        )
    lookups = Lookups()
    deployer = Deployer(
        settings,
        pools,
        containers,
        log=router,
        sessionmaker=maker,
        no_forking=no_forking,
        on_active=lambda plan: lookups.forget_agent(plan.organization_id, plan.agent_name),
    )
    backend.watch_plain_processes(deployer.plain_processes)
    return ControlState(
        settings=settings,
        engine=engine,
        sessionmaker=maker,
        box=box,
        pools=pools,
        router=router,
        supervisor=supervisor,
        deployer=deployer,
        proxy_http=_cookieless_client(),
        backend=backend,
        backends=backend_router,
        containers=containers,
        instances=instances,
        recorder=recorder,
        journal=journal,
        builds=build_service,
        webhooks=webhooks,
        admin_token_created=boot.admin_token,
        lookups=lookups,
        metrics=metrics,
        tracing=Tracing(settings.otlp_endpoint),
        cluster=cluster,
    )


def _cookieless_client() -> httpx.AsyncClient:
    """The client for instances' webhooks and Daily's API: it keeps no cookies, so nothing
    one instance sets is ever sent to another."""
    return httpx.AsyncClient(cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


async def _open_containers(settings: Settings, router: LogRouter) -> ContainerBackend | None:
    """The container backend, when an engine is configured."""
    url = settings.container.engine_url
    if not url:
        return None
    engine = Engine(url)
    containers = ContainerBackend(
        engine,
        settings.state_dir,
        line_sink=router.line,
        metrics_sink=router.sample,
        sample_interval=settings.instance_sample_interval,
        publish_host=settings.container.publish_host,
    )
    await containers.start(check_image=settings.container.base_image)
    return containers


async def _open_cluster(settings: Settings, router: LogRouter) -> Backend | None:
    """The Ray backend, when a cluster is configured; Ray is imported only then."""
    if not settings.ray.address:
        return None
    from cattery.backends.ray import open_cluster

    return await open_cluster(settings, line_sink=router.line, metrics_sink=router.sample)


async def _recover(state: ControlState) -> None:
    """Before serving and before the pools exist: take back what a crash left running."""
    done = await recover(state)
    if done.adopted or done.closed or done.ended or done.replayed:
        logger.info(
            f"Recovered from a restart: {done.replayed} start(s) replayed from the journal, "
            f"{done.adopted} session(s) reattached, "
            f"{done.closed} idle instance(s) closed, {done.ended} session(s) recorded as ended"
        )
    state.instances.start(state.backends)


async def _close(state: ControlState) -> None:
    """Graceful shutdown: sessions end as terminated, every instance is closed and forgotten."""
    await state.supervisor.aclose()
    await state.lookups.aclose()
    await state.recorder.aclose()
    await state.builds.aclose()
    await state.deployer.aclose()
    await state.pools.aclose()
    await state.backend.aclose()
    if state.cluster is not None:
        await state.cluster.aclose()
    if state.containers is not None:
        await state.containers.aclose()
    await state.instances.aclose()
    await state.webhooks.aclose()
    state.tracing.aclose()
    await state.router.aclose()
    await state.proxy_http.aclose()
    await state.engine.dispose()
