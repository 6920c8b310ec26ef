"""All of the control plane's configuration, read once from env (``CATTERY_*``) or cattery.toml.

This is the only module that reads the environment for the control plane; everything else
receives a ``Settings`` object.
"""

from __future__ import annotations

import ipaddress
import os
import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from cattery.contract import OTLP_ENDPOINT_ENV
from cattery.runtime.options import PUBLIC_STUN


def host_architecture() -> str:
    """This machine's CPU architecture in the words of ``--architecture``."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class PoolDefaults(BaseModel):
    max_agents: int = 50
    #: the most ``maxAgents`` a deploy may ask for (``CATTERY_POOLS__MAX_AGENTS_LIMIT``)
    max_agents_limit: int = Field(500, ge=1)
    cooldown_seconds: float = 300.0
    start_timeout: float = 60.0
    max_session_duration: int = 7200


class DailySettings(BaseModel):
    """Daily's REST API: ``CATTERY_DAILY__API_KEY`` / ``__API_URL``, or ``DAILY_API_KEY`` /
    ``DAILY_API_URL`` (the names Pipecat's tools use) when those are unset."""

    api_key: SecretStr | None = None
    api_url: str = "https://api.daily.co/v1"


class _DailyEnvNames(PydanticBaseSettingsSource):
    """``DAILY_API_KEY`` and ``DAILY_API_URL`` as ``daily.api_key`` / ``daily.api_url``."""

    NAMES = {"api_key": "DAILY_API_KEY", "api_url": "DAILY_API_URL"}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        daily = {key: os.environ[env] for key, env in self.NAMES.items() if os.environ.get(env)}
        return {"daily": daily} if daily else {}


class _OtelEnvNames(PydanticBaseSettingsSource):
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` (OpenTelemetry's own name) as ``otlp_endpoint``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        endpoint = os.environ.get(OTLP_ENDPOINT_ENV)
        return {"otlp_endpoint": endpoint} if endpoint else {}


class ContainerSettings(BaseModel):
    """The container backend: agents whose ``image`` is an image reference run as containers
    through this Docker Engine API socket (Docker's, or ``podman system service``'s)."""

    #: e.g. ``unix:///run/podman/podman.sock``; unset, image references are refused
    engine_url: str | None = None
    #: the host address containers' ports are published on (loopback: only we reach them)
    publish_host: str = "127.0.0.1"
    #: the image folders run in when ``backend`` is "container"
    base_image: str = "localhost/cattery-base:latest"
    #: builds: the image that stands in for ``dailyco/pipecat-base`` in a Dockerfile's
    #: ``FROM`` (e.g. ``localhost/cattery-base:latest`` on a machine that can't pull it);
    #: unset, the Dockerfile's base is used as written
    pipecat_base_image: str | None = None


class OidcSettings(BaseModel):
    """An OIDC provider for ``pipecat cloud auth login`` (``GET /auth/config`` answers it);
    unset, the CLI signs in with ``auth use-pat`` instead."""

    issuer: str | None = None
    client_id: str | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])


class BuildSettings(BaseModel):
    """Builds of uploaded contexts (``pipecat cloud deploy`` with no image)."""

    #: a build running longer ends with status ``timeout``
    timeout_seconds: float = Field(600.0, gt=0)


class MetricsSettings(BaseModel):
    """``GET /metrics``: who may scrape it without a key."""

    #: comma-separated addresses or networks (``10.0.0.5``, ``10.0.0.0/24``) whose requests
    #: need no key (``CATTERY_METRICS__SCRAPE_ADDRESSES``); empty: a key is always needed
    scrape_addresses: str = ""

    @property
    def scrape_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [
            ipaddress.ip_network(item.strip(), strict=False)
            for item in self.scrape_addresses.split(",")
            if item.strip()
        ]


class HttpSettings(BaseModel):
    """The API's connections (``CATTERY_HTTP__*``): the API may face the internet (carriers
    and webhooks call it), so a slow or idle client is let go."""

    #: seconds a request's headers may take to arrive whole; then the connection is closed
    header_timeout: float = Field(10.0, gt=0)
    #: seconds an idle kept-alive connection stays open
    keep_alive_timeout: float = Field(5.0, gt=0)
    #: open connections (WebSockets included) beyond which requests get a 503
    max_connections: int = Field(1000, ge=1)


class WebhookSettings(BaseModel):
    """Session webhooks' tries (``CATTERY_WEBHOOKS__*``)."""

    #: seconds to wait before each retry, comma-separated; the last repeats
    retry_schedule: str = "10,30,60,300,900,1800,3600"
    #: a delivery still failing this long after its event gives up
    max_age_hours: float = Field(24.0, gt=0)
    #: how long one try waits for the receiver's answer
    timeout_seconds: float = Field(10.0, gt=0)
    #: how often the sender looks for due deliveries when nothing wakes it
    poll_seconds: float = Field(1.0, gt=0)

    def delay(self, attempts: int) -> float:
        """Seconds before the try after ``attempts + 1`` failed ones."""
        steps = [float(s) for s in self.retry_schedule.split(",") if s.strip()] or [60.0]
        return steps[min(attempts, len(steps) - 1)]


class DevSettings(BaseModel):
    """``cattery dev``: the development runner's routes over one agent."""

    #: the agent ``POST /start`` and ``/api/offer`` start sessions of; dev mode is on when set
    agent: str | None = None
    #: the public host (no scheme) carriers reach this machine at, for telephony webhooks
    proxy: str | None = None
    #: ``-t``: the only transport ``POST /start`` takes, and the carrier ``POST /`` answers for
    transport: str | None = None


class RaySettings(BaseModel):
    """A Ray cluster to run instances on (``CATTERY_RAY__*``); unset, nothing imports Ray."""

    #: the cluster's address as a driver reaches it (``host:port``), or ``auto`` for a local
    #: ``ray start --head``; unset, instances run on this machine alone
    address: str | None = None
    #: the cluster's Ray token (what Ray reads from ``RAY_AUTH_TOKEN``, with
    #: ``RAY_AUTH_MODE=token``): the control plane uses it and hands it to joining nodes
    auth_token: SecretStr | None = None
    #: the ``host:port`` nodes joining with ``cattery node join`` reach the head at; unset,
    #: ``address`` (unless it is ``auto``)
    join_address: str | None = None
    #: how long a region's enroll token may be exchanged (once) for the join details
    enroll_token_ttl_seconds: float = Field(3600.0, gt=0)
    #: the Ray namespace the node hosts live in (named, detached: they outlive us)
    namespace: str = "cattery"
    #: this machine's address in the cluster (Ray's ``--node-ip-address``); None: Ray's pick
    node_ip: str | None = None
    #: where node hosts keep agents' code, venvs and instance logs, one folder per node
    node_state_dir: Path = Path("/tmp/cattery-node")
    #: seconds between node hosts' load reports (their heartbeat)
    report_seconds: float = Field(1.0, gt=0)
    #: a node whose node host has not answered for this long is fenced: no new starts,
    #: its sessions' Session API calls answer 503, until it answers again
    fence_seconds: float = Field(3.0, gt=0)
    #: an instance whose node host stopped renewing its lease this long ago exits (its
    #: sessions are then recorded as ended); longer than ``fence_seconds``
    lease_seconds: float = Field(5.0, gt=0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CATTERY_",
        env_nested_delimiter="__",
        toml_file="cattery.toml",
        extra="ignore",
    )

    host: str = "127.0.0.1"
    #: 7870, so that ``cattery dev`` keeps Pipecat's development runner's 7860 beside it
    port: int = 7870
    state_dir: Path = Path(".cattery")
    database_url: str | None = None
    admin_token: SecretStr | None = None
    secret_key: SecretStr | None = None
    organization: str = "default"
    admin_email: str = "admin@localhost"
    default_region: str = "local"
    regions: list[str] = Field(default_factory=lambda: ["local"])
    #: the CPU architectures agents may ask for (``--architecture``); this machine's
    architectures: list[str] = Field(default_factory=lambda: [host_architecture()])
    #: Krisp VIVA models by ``audioFilter`` (``{"tel": "/models/tel.kef", "pro": ...}``):
    #: an agent deployed with ``krispViva`` gets its model as ``KRISP_VIVA_FILTER_MODEL_PATH``
    krisp_viva_models: dict[str, str] = Field(default_factory=dict)
    #: where agents whose image is a folder run: "local" processes (the default), or
    #: "container": ``container.base_image`` with the folder mounted at /app. Image
    #: references always run on the container backend (``container.engine_url`` set).
    backend: str = Field("local", pattern="^(local|container)$")
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    builds: BuildSettings = Field(default_factory=BuildSettings)
    oidc: OidcSettings = Field(default_factory=OidcSettings)
    #: local backend: fork instances from a per-agent parent that has imported the bot
    #: (Linux only; ``CATTERY_BACKEND_FORK=0`` starts each instance as a fresh process)
    backend_fork: bool = True
    #: local backend, forking: an agent's parent that has forked nothing (and has no
    #: instance running) for this long exits; its next start forms one again from the
    #: interpreter's shared parent (the bot's own import: ``CATTERY_PARENT_IDLE_SECONDS``)
    parent_idle_seconds: float = Field(600.0, gt=0)
    #: agents deployed at start: name -> folder holding bot.py
    agents: dict[str, str] = Field(default_factory=dict)
    instance_sample_interval: float = 2.0
    #: days a stored log line is kept (``CATTERY_LOG_RETENTION_DAYS``; Pipecat Cloud's 30)
    log_retention_days: float = Field(30.0, gt=0)
    #: what one session may store of its logs; beyond, lines are counted and summarised
    log_max_session_lines: int = Field(20_000, ge=1)
    log_max_session_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    #: local backend, as root: each organization's instances run as its own unprivileged
    #: user in a private view of the files (``CATTERY_TENANT_USERS=0``: as cattery's user)
    tenant_users: bool = True
    #: the first uid (and gid) given to an organization's instances; no passwd entry needed
    tenant_uid_base: int = Field(1_500_000_000, gt=0)
    #: where instances can't have users of their own: let several organizations run bots
    allow_shared_tenancy: bool = False
    #: local backend: a cgroup v2 group per instance where the machine allows it
    instance_cgroups: bool = True
    #: folders agents' folders must be in (``os.pathsep``- or comma-separated); unset: the
    #: folders of ``agents`` (``--agent``, ``cattery dev``) and the state dir's ``builds``
    agent_roots: str | None = None
    #: local backend: hours an instance's log file is kept after its last line
    instance_log_retention_hours: float = Field(24.0, gt=0)
    #: the carriers' media WebSockets (``/ws/{carrier}``): ``none`` lets any call in that names
    #: an agent; ``token`` wants a token from a start, as Pipecat's runner's ``--ws-auth token``
    ws_auth: str = Field("none", pattern="^(none|token)$")
    pools: PoolDefaults = Field(default_factory=PoolDefaults)
    daily: DailySettings = Field(default_factory=DailySettings)
    #: ICE server URLs (comma-separated; empty for none) for WebRTC: instances use them, and
    #: clients get them when their start asks ``enableDefaultIceServers``
    ice_fallback_urls: str = PUBLIC_STUN
    dev: DevSettings = Field(default_factory=DevSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    #: an OTLP/HTTP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``): starts are traced there, and
    #: instances send their own spans (Pipecat's ``enable_tracing``) to it too
    otlp_endpoint: str | None = None
    ray: RaySettings = Field(default_factory=RaySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _DailyEnvNames(settings_cls),
            _OtelEnvNames(settings_cls),
            TomlConfigSettingsSource(settings_cls),
        )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.state_dir / 'cattery.db').resolve()}"

    @property
    def key_file(self) -> Path:
        return self.state_dir / "secret.key"

    @property
    def builds_dir(self) -> Path:
        """Uploaded build contexts and the folder agents made from them."""
        return self.state_dir / "builds"

    @property
    def agent_root_folders(self) -> list[Path]:
        """The folders an agent's folder must be inside (resolved, symlinks followed)."""
        if self.agent_roots is not None:
            given = [p for p in self.agent_roots.replace(",", os.pathsep).split(os.pathsep)]
            roots = [Path(p.strip()).expanduser() for p in given if p.strip()]
        else:
            roots = [Path(folder) for folder in self.agents.values()]
            roots.append(self.builds_dir)
        return [Path(os.path.realpath(root)) for root in roots]

    @property
    def ice_urls(self) -> list[str]:
        return [url.strip() for url in self.ice_fallback_urls.split(",") if url.strip()]


#: settings only ``cattery dev`` and ``--agent`` set
_NOT_FOR_USERS = frozenset({"dev"})


def setting_names() -> list[str]:
    """Every setting's environment variable (``cattery.toml`` takes the same names in
    lowercase without the prefix, nested ones as tables), for ``cattery serve --help``."""
    names = []
    for name, field in Settings.model_fields.items():
        if name in _NOT_FOR_USERS:
            continue
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names += [f"CATTERY_{name}__{sub}".upper() for sub in nested.model_fields]
        else:
            names.append(f"CATTERY_{name}".upper())
    return names
