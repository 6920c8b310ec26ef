"""One Ray cluster for every cluster test (a head on 127.0.0.2 offering no CPU, so every
instance runs on the workers on .3 and .4; token auth) and one control plane driving it
from the head's machine: a cluster costs seconds to start, so they are shared, and every
test leaves them as it found them (its agents deleted)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import RayTestCluster
from tests.support.control import ControlPlane, control_plane_process


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayTestCluster]:
    # a short folder: Ray's unix sockets live under it, and their paths are limited
    root = Path(tempfile.mkdtemp(prefix="cattery-ray-"))
    cluster = RayTestCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        killed = cluster.stop()
    assert not killed, f"processes were left on the cluster's nodes: {killed}"


@pytest.fixture(scope="session")
def cluster_control(
    ray_cluster: RayTestCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """``cattery serve`` with ``CATTERY_RAY__ADDRESS``: a driver on the head's machine."""
    folder = tmp_path_factory.mktemp("cluster-control")
    proc = control_plane_process(
        folder / "state", folder / "serve.log", **ray_cluster.control_env()
    ).start()
    try:
        proc.wait_ready("/healthz", timeout=120)
        yield ControlPlane(proc, folder / "state")
    finally:
        proc.stop()
