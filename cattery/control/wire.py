"""Response bodies in Pipecat Cloud's shapes, built from store rows.

Keys follow the OpenAPI file and what the official CLI reads; nothing here ever carries a
secret value or a key hash.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cattery.control.latency import latency_metrics


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat().replace("+00:00", "Z")


def deployment_manifest(dep: Any) -> dict[str, Any]:
    return {
        "manifest": {
            "spec": {
                "image": dep.image,
                "dailyNodeType": "local",
                "maxSessionDurationSeconds": dep.max_session_duration,
                "secretSet": dep.secret_set,
                "agentProfile": dep.agent_profile,
                "resources": dep.resources,
                "startQueueSeconds": dep.start_queue_seconds,
            }
        }
    }


def service_details(
    agent: Any,
    dep: Any | None,
    *,
    ready: bool,
    active_sessions: int,
    errors: list[dict[str, str]],
    pool: dict[str, int] | None = None,
    phase: str | None = None,
    plain_processes: str | None = None,
    resources: dict[str, Any] | None = None,
    active: tuple[str | None, bool] | None = None,
) -> dict[str, Any]:
    """``dep`` is the deployment the agent's last deploy asked for; ``ready``, ``phase`` and
    ``errors`` are its. ``active``: the deployment that serves meanwhile (its id, and
    whether it takes sessions), when not ``dep`` (a redeploy not ready, or failed).
    ``pool``: the agent's instances right now (idle, starting, busy, total); cattery's own.
    ``phase`` (building its environment, starting, ready, failed) is what ``agent status``
    shows of the active deployment, with why its instances are plain processes if they are.
    ``resources``: the profile's CPU and memory and what enforces them here."""
    deployment_id = dep.id if dep is not None else None
    active_id, available = active if active is not None else (deployment_id, ready)
    plain_processes = plain_processes or (dep.plain_processes_reason if dep is not None else None)
    shown_phase = phase or ("Ready" if ready else "Pending")
    if plain_processes:
        shown_phase += f" (plain processes, not forked: {plain_processes})"
    return {
        "id": agent.id,
        "name": agent.name,
        "region": agent.region,
        "ready": ready,
        "available": available,
        "createdAt": iso(agent.created_at),
        "updatedAt": iso(agent.updated_at),
        "desiredDeploymentId": deployment_id,
        "activeDeploymentId": active_id,
        "reconciledDeploymentId": active_id if available else None,
        "activeDeploymentReady": available,
        "activeSessionCount": active_sessions,
        "agentProfile": dep.agent_profile if dep is not None else None,
        "autoScaling": {
            "minReplicas": dep.min_agents if dep is not None else 0,
            "maxReplicas": dep.max_agents if dep is not None else 0,
            "minAgents": dep.min_agents if dep is not None else 0,
            "maxAgents": dep.max_agents if dep is not None else 0,
        },
        "krispViva": (
            {"audioFilter": dep.krisp_viva_audio_filter}
            if dep is not None and dep.krisp_viva_audio_filter
            else {}
        ),
        "resources": dep.resources if dep is not None else None,
        "architecture": dep.architecture if dep is not None else None,
        "websocketAuth": dep.websocket_auth if dep is not None else None,
        "buildId": dep.build_id if dep is not None else None,
        "deployment": (
            {"id": deployment_id, **deployment_manifest(dep)} if dep is not None else None
        ),
        "errors": errors,
        "pool": pool or {"idle": 0, "starting": 0, "busy": 0, "total": 0, "waiting": 0},
        "currentRevision": (
            {"deploymentID": deployment_id, "phase": shown_phase} if dep is not None else None
        ),
        "processes": _processes(dep, plain_processes),
        **({"resources": resources} if resources is not None else {}),
    }


def _processes(dep: Any | None, plain_processes: str | None) -> dict[str, Any] | None:
    """How a folder agent's instances run on the local backend: forked or plain, and why."""
    if dep is None:
        return None
    return {
        "forked": plain_processes is None,
        "plainProcessesReason": plain_processes,
        "environmentPython": dep.environment_python,
    }


def service_list_item(agent: Any) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "region": agent.region,
        "organizationId": agent.organization_id,
        "activeDeploymentId": agent.active_deployment_id,
        "desiredDeploymentId": agent.active_deployment_id,
        "reconciledDeploymentId": agent.active_deployment_id,
        "createdAt": iso(agent.created_at),
        "updatedAt": iso(agent.updated_at),
        "deletedAt": iso(agent.deleted_at),
    }


def deployment_item(dep: Any) -> dict[str, Any]:
    return {
        "id": dep.id,
        **deployment_manifest(dep),
        "buildId": dep.build_id,
        "plainProcessesReason": dep.plain_processes_reason,
        "environmentPython": dep.environment_python,
        "createdAt": iso(dep.created_at),
        "updatedAt": iso(dep.updated_at),
    }


def session_item(session: Any) -> dict[str, Any]:
    return {
        "sessionId": session.id,
        "serviceId": session.agent_id,
        "organizationId": session.organization_id,
        "deploymentId": session.deployment_id,
        "createdAt": iso(session.created_at),
        "updatedAt": iso(session.ended_at or session.created_at),
        "endedAt": iso(session.ended_at),
        "botStartSeconds": session.bot_start_seconds,
        "coldStart": session.cold_start,
        "endState": session.end_state,
        "completionStatus": session.completion_status or session.end_state,
        "endReason": session.end_reason,
        "transport": session.transport,
    }


def _p(values: Sequence[float], q: int) -> float:
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[q - 1])


def resource_metrics(samples: Sequence[Any]) -> dict[str, Any]:
    cpu = [s.cpu_millicores for s in samples]
    mem = [s.memory_bytes for s in samples]
    return {
        "timeseries": [
            {"t": int(s.t.timestamp()), "c": s.cpu_millicores, "m": s.memory_bytes} for s in samples
        ],
        "sampleCount": len(samples),
        "cpuMillicoresP50": _p(cpu, 50) if cpu else 0,
        "cpuMillicoresP99": _p(cpu, 99) if cpu else 0,
        "memoryBytesP50": _p(mem, 50) if mem else 0,
        "memoryBytesP99": _p(mem, 99) if mem else 0,
    }


def session_detail(
    session: Any, samples: Sequence[Any], latency_row: Any | None = None
) -> dict[str, Any]:
    return {
        **session_item(session),
        "events": list(session.events or []),
        "resourceMetrics": resource_metrics(samples),
        "latencyMetrics": latency_metrics(latency_row),
    }


def log_entry(line: Any) -> dict[str, Any]:
    return {"log": line.line, "timestamp": iso(line.ts), "sessionId": line.session_id}


def build_item(build: Any) -> dict[str, Any]:
    """A build as Pipecat Cloud's ``Build`` schema has it (no ``imageUri`` until success)."""
    body = {
        "id": build.id,
        "organizationId": build.organization_id,
        "status": build.status,
        "region": build.region,
        "contextHash": build.context_hash,
        "dockerfilePath": build.dockerfile_path,
        "imageUri": build.image if build.status == "success" else None,
        "errorMessage": build.error_message,
        "contextSizeBytes": build.context_size_bytes,
        "imageSizeBytes": build.image_size_bytes,
        "buildDurationSeconds": build.build_duration_seconds,
        "startedAt": iso(build.started_at),
        "completedAt": iso(build.completed_at),
        "createdAt": iso(build.created_at),
        "updatedAt": iso(build.updated_at),
    }
    return {k: v for k, v in body.items() if v is not None}


def webhook_delivery(delivery: Any) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event": delivery.event,
        "url": delivery.url,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "lastStatusCode": delivery.last_status_code,
        "lastError": delivery.last_error,
        "createdAt": iso(delivery.created_at),
        "nextAttemptAt": iso(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "deliveredAt": iso(delivery.delivered_at),
    }
