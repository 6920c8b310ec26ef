"""The API's answers as typed models, so ``/openapi.json`` describes what cattery sends.

``wire.py`` builds the bodies from store rows; these models name their fields and types
for the schema. Each allows fields it does not name (Pipecat Cloud's shapes carry more
than a client reads, and grow), so a model never drops what a route answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class StatusOK(_Answer):
    status: str


class IceServer(_Answer):
    urls: str | list[str]


class IceConfig(_Answer):
    iceServers: list[IceServer]


class StartResponse(_Answer):
    """A start's answer: a session now (``sessionId``, a Daily room or WebRTC's ICE servers),
    or for a WebSocket transport the URL and token the connection uses later."""

    sessionId: str | None = None
    dailyRoom: str | None = None
    dailyToken: str | None = None
    iceConfig: IceConfig | None = None
    wsUrl: str | None = None
    token: str | None = None
    #: a WebSocket start's body, base64 JSON, for ``?body=``
    body: str | None = None


class DeployError(_Answer):
    code: str
    message: str


class PoolCounts(_Answer):
    """The agent's instances right now (cattery's own), and the starts queued for one."""

    idle: int
    starting: int
    busy: int
    total: int
    waiting: int = 0


class Scaling(_Answer):
    minAgents: int
    maxAgents: int
    minReplicas: int
    maxReplicas: int


class ServiceDetails(_Answer):
    id: str
    name: str
    region: str
    ready: bool
    available: bool
    createdAt: str | None
    updatedAt: str | None
    desiredDeploymentId: str | None
    activeDeploymentId: str | None
    reconciledDeploymentId: str | None
    activeDeploymentReady: bool
    activeSessionCount: int
    agentProfile: str | None
    autoScaling: Scaling
    deployment: dict[str, Any] | None
    errors: list[DeployError]
    pool: PoolCounts


class ServiceDetailsBody(_Answer):
    """The CLI's form of an agent's details."""

    body: ServiceDetails


class ServiceListItem(_Answer):
    id: str
    name: str
    region: str
    organizationId: str
    activeDeploymentId: str | None
    createdAt: str | None
    updatedAt: str | None
    deletedAt: str | None


class ServiceList(_Answer):
    services: list[ServiceListItem]


class DeploymentItem(_Answer):
    id: str
    manifest: dict[str, Any]
    buildId: str | None
    createdAt: str | None
    updatedAt: str | None


class DeploymentList(_Answer):
    deployments: list[DeploymentItem]


class SessionItem(_Answer):
    sessionId: str
    serviceId: str
    organizationId: str
    deploymentId: str
    createdAt: str | None
    updatedAt: str | None
    endedAt: str | None
    botStartSeconds: float | None
    coldStart: bool | None
    endState: str | None
    completionStatus: str | None
    endReason: str | None = None
    transport: str | None


class SessionList(_Answer):
    total_count: int
    sessions: list[SessionItem]


class SessionDetail(SessionItem):
    events: list[Any]
    resourceMetrics: dict[str, Any]
    latencyMetrics: dict[str, Any] | None


class StoppedSession(StatusOK):
    session_id: str


class LogTotal(_Answer):
    value: int
    relation: str


class LogEntry(_Answer):
    log: str
    timestamp: str | None
    sessionId: str | None


class LogList(_Answer):
    total: LogTotal
    logs: list[LogEntry]
