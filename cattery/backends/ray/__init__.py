"""The Ray backend: instances on the nodes of a Ray cluster (``CATTERY_RAY__ADDRESS``).

This package's own module imports no Ray: ``open_cluster`` does, and only the control
plane with a cluster configured calls it. Without one, cattery never imports Ray.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cattery.backends.base import LineSink, MetricsSink
from cattery.settings import Settings

if TYPE_CHECKING:
    from cattery.backends.ray.backend import RayBackend

__all__ = ["open_cluster"]


def auth_environment(settings: Settings) -> None:
    """Ray reads its token from the environment: set it before Ray is imported."""
    token = settings.ray.auth_token
    if token is not None:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = token.get_secret_value()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


async def open_cluster(
    settings: Settings, line_sink: LineSink, metrics_sink: MetricsSink
) -> RayBackend:
    """Connect to the cluster as a driver and find or make a node host on every node."""
    auth_environment(settings)
    from cattery.backends.ray.backend import RayBackend
    from cattery.backends.ray.nodehost import NodeOptions

    options = NodeOptions(
        state_dir=str(settings.ray.node_state_dir),
        fork=settings.backend_fork,
        tenant_users=settings.tenant_users,
        instance_cgroups=settings.instance_cgroups,
        allow_shared_tenancy=settings.allow_shared_tenancy,
        tenant_uid_base=settings.tenant_uid_base,
        sample_interval=settings.instance_sample_interval,
        log_retention_seconds=settings.instance_log_retention_hours * 3600,
        lease_seconds=settings.ray.lease_seconds,
    )
    backend = RayBackend(
        settings.ray,
        options,
        default_region=settings.default_region,
        line_sink=line_sink,
        metrics_sink=metrics_sink,
    )
    await backend.start()
    return backend
