"""Everything the control plane's lifespan creates, owned in one place and closed in order."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cattery.backends.base import Backend
from cattery.backends.container import ContainerBackend
from cattery.backends.local import LocalBackend
from cattery.backends.router import BackendRouter
from cattery.control.builds import BuildService
from cattery.control.calls import CallMap
from cattery.control.deployer import Deployer
from cattery.control.logrouter import LogRouter
from cattery.control.lookups import Lookups
from cattery.control.metrics import ControlMetrics
from cattery.control.recorder import InstanceRecorder, StoreRecorder
from cattery.control.session_webhooks import SessionWebhooks
from cattery.control.supervisor import SessionSupervisor
from cattery.control.tracing import Tracing
from cattery.control.wstokens import WsTokens
from cattery.pools import PoolManager
from cattery.settings import Settings
from cattery.store.crypto import SecretBox
from cattery.store.journal import StartJournal


@dataclass
class ControlState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    box: SecretBox
    pools: PoolManager
    router: LogRouter
    supervisor: SessionSupervisor
    deployer: Deployer
    proxy_http: httpx.AsyncClient
    backend: LocalBackend
    #: every backend by name (the local one, containers, a cluster): pools spawn through
    #: it, and recovery asks it to adopt what a crash left running
    backends: BackendRouter
    containers: ContainerBackend | None
    instances: InstanceRecorder
    #: sessions' records (the supervisor's and the log router's writer)
    recorder: StoreRecorder
    #: starts durable before their commit: replayed by recovery
    journal: StartJournal
    builds: BuildService
    webhooks: SessionWebhooks
    admin_token_created: str | None = field(default=None, repr=False)
    ws_tokens: WsTokens = field(default_factory=WsTokens, repr=False)
    lookups: Lookups = field(default_factory=Lookups, repr=False)
    metrics: ControlMetrics = field(default_factory=ControlMetrics, repr=False)
    tracing: Tracing = field(default_factory=lambda: Tracing(None), repr=False)
    whatsapp_calls: CallMap = field(default_factory=CallMap, repr=False)
    #: the cluster's backend (``CATTERY_RAY__ADDRESS``): folder agents run on its nodes
    cluster: Backend | None = field(default=None, repr=False)
