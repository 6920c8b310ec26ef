"""The control plane's tables, as SQLAlchemy 2 ORM classes.

Ids are strings (prefixed for internal rows, UUIDs where Pipecat Cloud shows them),
timestamps are timezone-aware UTC, and enum-like columns hold plain strings so a new value
never needs a migration on SQLite.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Double,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cattery.contract import TERMINAL_INSTANCE_STATUSES as TERMINAL_INSTANCE_STATUSES
from cattery.contract import EndState as EndState
from cattery.store.types import BigIntKey, UTCDateTime, utcnow

#: constraint names that are the same on every database, so migrations can refer to them
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id(prefix: str) -> str:
    """An internal id such as ``agt_3f9c...``: unique, and its kind is readable in logs."""
    return f"{prefix}_{uuid.uuid4().hex}"


def new_uuid() -> str:
    """A UUID4 string: the form Pipecat Cloud uses for session and deployment ids."""
    return str(uuid.uuid4())


class ApiKeyKind(StrEnum):
    ADMIN = "admin"
    PRIVATE = "private"
    PUBLIC = "public"


class SecretSetKind(StrEnum):
    SECRET_SET = "secretSet"
    IMAGE_PULL_SECRET = "imagePullSecret"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("org"))
    name: Mapped[str] = mapped_column(String(63), unique=True)
    verbose_name: Mapped[str] = mapped_column(String(255))
    #: the ``defaultRegion`` property; unset, the control plane's default region
    default_region: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("usr"))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("key"))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    # the full key, kept only for public keys: the CLI lists those in full
    public_value: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Agent(Base):
    __tablename__ = "agents"
    __table_args__ = (
        # a name is free again once its agent is deleted
        Index(
            "uq_agents_organization_id_name_live",
            "organization_id",
            "name",
            unique=True,
            sqlite_where="deleted_at IS NULL",
            postgresql_where="deleted_at IS NULL",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("agt"))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(63))
    region: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # no foreign key: agents and deployments would refer to each other; the repository
    # only ever sets it to a deployment of this agent
    active_deployment_id: Mapped[str | None] = mapped_column(String(64))
    deleted_at: Mapped[datetime | None]


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_uuid)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    image: Mapped[str] = mapped_column(String(1024))
    secret_set: Mapped[str | None] = mapped_column(String(255))
    image_pull_secret_set: Mapped[str | None] = mapped_column(String(255))
    region: Mapped[str] = mapped_column(String(64))
    agent_profile: Mapped[str] = mapped_column(String(64))
    min_agents: Mapped[int]
    max_agents: Mapped[int]
    max_session_duration: Mapped[int]  # seconds
    build_id: Mapped[str | None] = mapped_column(String(255))
    backend: Mapped[str] = mapped_column(String(32), default="local")
    # the agent's own venv interpreter, when the local backend built one
    environment_python: Mapped[str | None] = mapped_column(String(4096))
    # why the local backend runs its instances as plain processes, when forking fell back
    plain_processes_reason: Mapped[str | None] = mapped_column(Text)
    #: the Session API passes cookies both ways for its sessions (the agent opted in)
    session_cookies: Mapped[bool] = mapped_column(default=False)
    #: how long a start may wait for an instance when the pool is full (0: a 429 at once)
    start_queue_seconds: Mapped[int] = mapped_column(default=0, server_default="0")
    #: ``{"cpu": "500m", "memory": "1Gi"}`` given at deploy instead of a profile
    resources: Mapped[dict[str, Any] | None]
    architecture: Mapped[str | None] = mapped_column(String(16))
    #: ``token`` or ``none``: this agent's carriers' WebSockets; unset, ``CATTERY_WS_AUTH``
    websocket_auth: Mapped[str | None] = mapped_column(String(16))
    #: Krisp VIVA's ``audioFilter`` (``tel``, ``pro``), passed to the bot; unset, off
    krisp_viva_audio_filter: Mapped[str | None] = mapped_column(String(16))
    #: where ``session.started`` and ``session.ended`` are posted (the agent's choice)
    session_webhook_url: Mapped[str | None] = mapped_column(String(2048))
    #: why the deployment failed (its code and message), if it did; the agent's previous
    #: deployment stays the active one
    failed_code: Mapped[str | None] = mapped_column(String(64))
    failed_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SecretSet(Base):
    __tablename__ = "secret_sets"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("set"))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(255))
    region: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32), default=SecretSetKind.SECRET_SET.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Secret(Base):
    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("secret_set_id", "key"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("sec"))
    secret_set_id: Mapped[str] = mapped_column(ForeignKey("secret_sets.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    value_encrypted: Mapped[str] = mapped_column(Text)  # Fernet token, never plaintext
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Session(Base):
    """One conversation; ``id`` is the sessionId clients and the CLI see."""

    __tablename__ = "sessions"
    __table_args__ = (
        Index("ix_sessions_agent_id_created_at", "agent_id", "created_at"),
        Index("ix_sessions_ended_at", "ended_at"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_uuid)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    instance_id: Mapped[str | None] = mapped_column(String(64))
    transport: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    bot_started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    bot_start_seconds: Mapped[float | None] = mapped_column(Double)
    cold_start: Mapped[bool | None]
    end_state: Mapped[str | None] = mapped_column(String(32))
    completion_status: Mapped[str | None] = mapped_column(String(255))
    #: why a session ended other than by its bot (its instance died, its node was lost)
    end_reason: Mapped[str | None] = mapped_column(Text)
    # [{"eventCode": ..., "eventTs": ...}], replaced whole on change (no in-place mutation)
    events: Mapped[list[Any]] = mapped_column(default=list)


class SessionLatency(Base):
    """What a session's ``[pcc-observability]`` lines said: startup timing (seconds from
    the pipeline starting to set up) and each user-to-bot latency, in order."""

    __tablename__ = "session_latency"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    pipeline_startup_seconds: Mapped[float | None] = mapped_column(Double)
    transport_connected_seconds: Mapped[float | None] = mapped_column(Double)
    first_bot_speech_seconds: Mapped[float | None] = mapped_column(Double)
    # replaced whole on change (no in-place mutation)
    user_bot_latencies: Mapped[list[Any]] = mapped_column(default=list)


class WebhookDelivery(Base):
    """One event for a session webhook, kept until it lands or gives up (a restart resumes
    what is pending). ``body`` is fixed when the event happens; each try signs it anew."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("whd"))
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    event: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    body: Mapped[str] = mapped_column(Text)
    #: pending, delivered, failed (gave up)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class ResourceSample(Base):
    __tablename__ = "resource_samples"

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(
        ForeignKey("sessions.id", ondelete="CASCADE"), index=True
    )
    t: Mapped[datetime]
    cpu_millicores: Mapped[float] = mapped_column(Double)
    memory_bytes: Mapped[int] = mapped_column(BigInteger)


class LogLine(Base):
    """One line an instance printed.

    No foreign keys: this is the hottest insert path, and lines may outlive what they name.
    """

    __tablename__ = "log_lines"
    __table_args__ = (Index("ix_log_lines_agent_id_id", "agent_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    agent_id: Mapped[str] = mapped_column(String(64))
    deployment_id: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    instance_id: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[datetime]
    line: Mapped[str] = mapped_column(Text)


class Instance(Base):
    """A live runtime process, remembered so a restarted control plane can reattach to it."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the backend's handle id
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"), index=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id"))
    backend: Mapped[str] = mapped_column(String(32))
    pid: Mapped[int | None]
    address: Mapped[str] = mapped_column(String(255))
    token_encrypted: Mapped[str] = mapped_column(Text)  # Fernet token of the instance token
    log_path: Mapped[str | None] = mapped_column(String(4096))
    log_offset: Mapped[int] = mapped_column(BigInteger, default=0)
    # epoch seconds: tells the original process from a later one that reused its pid
    process_started_at: Mapped[float | None] = mapped_column(Double)
    session_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Build(Base):
    """A build of an uploaded context: its status, where its result is, and its sizes.

    ``image`` is what a deployment of the build runs: a folder agent's absolute path, or
    the tag of the image the container engine built.
    """

    __tablename__ = "builds"
    __table_args__ = (
        Index("ix_builds_organization_id_context_hash", "organization_id", "context_hash"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_uuid)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    status: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(64))
    context_hash: Mapped[str] = mapped_column(String(64))
    dockerfile_path: Mapped[str] = mapped_column(String(1024))
    image: Mapped[str | None] = mapped_column(String(4096))
    error_message: Mapped[str | None] = mapped_column(Text)
    context_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    image_size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    build_duration_seconds: Mapped[int | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class BuildLogLine(Base):
    __tablename__ = "build_log_lines"
    __table_args__ = (Index("ix_build_log_lines_build_id_id", "build_id", "id"),)

    id: Mapped[int] = mapped_column(BigIntKey, primary_key=True, autoincrement=True)
    build_id: Mapped[str] = mapped_column(ForeignKey("builds.id", ondelete="CASCADE"))
    ts: Mapped[datetime]
    line: Mapped[str] = mapped_column(Text)


class AgentProfile(Base):
    """An organization's own profile; the built-in ones live in code."""

    __tablename__ = "agent_profiles"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("prf"))
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(255))
    #: Kubernetes quantities, as given: ``"500m"``, ``"2"``; ``"256Mi"``, ``"4Gi"``
    cpu: Mapped[str] = mapped_column(String(32))
    memory: Mapped[str] = mapped_column(String(32))
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Region(Base):
    """A place agents may run: on a cluster, the nodes labelled with its key. Regions are
    the platform's, shared by its organizations, as its nodes are."""

    __tablename__ = "regions"

    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(255))
    #: the ``--architecture`` values its nodes run; unset, the platform's
    supported_architectures: Mapped[list[Any] | None]
    default_architecture: Mapped[str | None] = mapped_column(String(16))
    ws_public_endpoint: Mapped[str | None] = mapped_column(String(2048))
    workloads_namespace: Mapped[str | None] = mapped_column(String(63))
    #: when a machine first joined it with an enroll token (the settings' regions: at
    #: registration, this machine serving them)
    enrolled_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EnrollToken(Base):
    """A one-time token a new machine exchanges for the cluster's join details; only its
    hash is kept, and exchanging it marks it used."""

    __tablename__ = "enroll_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: new_id("enr"))
    region_key: Mapped[str] = mapped_column(
        ForeignKey("regions.key", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
