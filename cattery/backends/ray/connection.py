"""Joining the Ray cluster as a driver, in cattery's own namespace.

``auto`` connects to a cluster already running on this machine, or starts a head here
(``ray start --head``, no dashboard). Token auth (``RAY_AUTH_MODE=token``) is Ray's own:
the token comes from ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` in our environment, as
it does for ``ray start`` on every node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import ray
from loguru import logger

from cattery.settings import RaySettings

#: nothing of ours leaves the cluster: Ray's usage reporting stays off unless asked for
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}


def ray_command() -> str:
    """The ``ray`` script beside our interpreter (a venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def start_head(node_ip: str | None) -> None:
    """A head on this machine, for ``auto`` when no cluster runs here yet."""
    args = [ray_command(), "start", "--head", "--include-dashboard=false", "--disable-usage-stats"]
    if node_ip:
        args += ["--node-ip-address", node_ip]
    logger.info("Starting a Ray head on this machine (ray start --head)")
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env={**os.environ, **QUIET_ENV})


def connect(settings: RaySettings) -> None:
    """``ray.init`` as a driver (blocking: seconds). Idempotent."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        return
    address = settings.address
    if address == "auto":
        try:
            _init("auto", settings)
            return
        except ConnectionError:
            start_head(settings.node_ip)
    _init(address, settings)


def _init(address: str | None, settings: RaySettings) -> None:
    ray.init(
        address=address,
        namespace=settings.namespace,
        _node_ip_address=settings.node_ip,
        log_to_driver=False,
        logging_level="WARNING",
    )


def disconnect() -> None:
    if ray.is_initialized():
        ray.shutdown()
