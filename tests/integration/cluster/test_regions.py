"""Regions on a real cluster: a machine joins a region with ``cattery node join`` and a
one-time enroll token, a deploy with that region runs only there, and the region can't be
deleted while the agent is in it.

The cluster's worker on 127.0.0.4 leaves and comes back through ``cattery node join`` in a
region of its own (the test namespace has no fifth address); afterwards a plain worker
takes its place again, so the shared cluster is left as it was found.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.control.helpers import held_probe_sessions
from tests.support.cluster import NODE_CPUS, NODE_MEMORY, NODE_UP, RayNode, RayTestCluster
from tests.support.control import ORG, ControlPlane
from tests.support.processes import CATTERY, TEST_BOTS, base_env, hand_over
from tests.support.waiting import wait_for

REGION = "eu-lab"
JOINED_IP = "127.0.0.4"
REGIONS = f"/v1/organizations/{ORG}/regions"


def node_join(
    ray_cluster: RayTestCluster, control: ControlPlane, token: str, log_name: str
) -> subprocess.Popen[bytes]:
    """``cattery node join`` as an operator runs it on a new machine (``--block``: its
    Ray node lives in this process group, which the cluster's ``stop()`` then owns)."""
    log_path = ray_cluster.root / log_name
    command = [
        *CATTERY,
        "node",
        "join",
        "--control",
        control.url,
        "--token",
        token,
        "--block",
        "--node-ip-address",
        JOINED_IP,
        "--num-cpus",
        str(NODE_CPUS),
        "--memory",
        str(NODE_MEMORY),
        "--object-store-memory",
        str(100 * 2**20),
    ]
    env = {k: v for k, v in base_env().items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # the token must come from the join, nothing else
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )


def stop_node(node: RayNode) -> None:
    node.signal(signal.SIGTERM)
    try:
        node.proc.wait(30)
    except subprocess.TimeoutExpired:
        node.signal(signal.SIGKILL)
        node.proc.wait(10)


@pytest.fixture
def worker_in_region(
    ray_cluster: RayTestCluster, cluster_control: ControlPlane
) -> Iterator[tuple[RayNode, str]]:
    """The worker on ``JOINED_IP`` re-joined in ``REGION``, and its enroll token (spent);
    afterwards a plain worker is back on that address."""
    control = cluster_control
    with control.client() as c:
        assert c.post(REGIONS, json={"regionKey": REGION}).status_code == 200
        minted = c.post(f"{REGIONS}/{REGION}/enrollment-tokens", json={})
        assert minted.status_code == 200, minted.text
    token = minted.json()["token"]
    plain = next(n for n in ray_cluster.nodes if n.ip == JOINED_IP and n.proc.poll() is None)
    stop_node(plain)
    ray_cluster.nodes.remove(plain)
    proc = node_join(ray_cluster, control, token, f"join-{JOINED_IP}.log")
    joined = RayNode(JOINED_IP, proc, ray_cluster.root / f"join-{JOINED_IP}.log")
    ray_cluster.nodes.append(joined)
    try:
        ray_cluster.wait_up(joined)
        yield joined, token
    finally:
        stop_node(joined)
        ray_cluster.nodes.remove(joined)
        plain = ray_cluster.add_node(JOINED_IP)
        hand_over(plain.proc.pid)  # the shared cluster's again, as before this test
        ray_cluster.wait_up(plain)
        with control.client() as c:
            c.delete(f"/v1/organizations/{ORG}/services/lab-bot")
            c.delete(f"{REGIONS}/{REGION}")


def test_a_joined_region_takes_its_deploys_only(
    ray_cluster: RayTestCluster,
    cluster_control: ControlPlane,
    worker_in_region: tuple[RayNode, str],
) -> None:
    control = cluster_control
    joined, token = worker_in_region
    assert NODE_UP in joined.log_path.read_text()
    assert f"in region {REGION}" in joined.log_path.read_text()

    again = node_join(ray_cluster, control, token, "join-again.log")
    assert again.wait(60) != 0
    assert "ENROLL_TOKEN_INVALID" in (ray_cluster.root / "join-again.log").read_text() or (
        "refused the token (401)" in (ray_cluster.root / "join-again.log").read_text()
    )

    body = {"minAgents": 0, "maxAgents": 4}
    wait_for(
        lambda: _deployed(control, body),
        timeout=90,
        interval=1.0,
        what="a deploy to the joined region",
    )
    with held_probe_sessions(control, "lab-bot", 3, ray_cluster.root) as reports:
        assert {report["node"] for report in reports} == {JOINED_IP}
        with control.client() as c:
            kept = c.delete(f"{REGIONS}/{REGION}")
        assert kept.status_code == 409 and kept.json()["code"] == "REGION_IN_USE"
    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/lab-bot").status_code == 200


def test_a_region_without_nodes_says_so(cluster_control: ControlPlane) -> None:
    control = cluster_control
    with control.client() as c:
        assert c.post(REGIONS, json={"regionKey": "ap-lab"}).status_code == 200
        body = {
            "serviceName": "nowhere-bot",
            "image": f"{TEST_BOTS / 'probe'}:latest",
            "region": "ap-lab",
            "autoScaling": {"minAgents": 0, "maxAgents": 1},
        }
        assert c.post(f"/v1/organizations/{ORG}/services", json=body).status_code == 200

        def refused() -> list:
            agent = c.get(f"/v1/organizations/{ORG}/services/nowhere-bot").json()["body"]
            return agent["errors"]

        errors = wait_for(refused, timeout=60, interval=0.5, what="the deployment's error")
        assert "REGION_HAS_NO_NODES" in json.dumps(errors), errors
        assert c.delete(f"/v1/organizations/{ORG}/services/nowhere-bot").status_code == 200
        assert c.delete(f"{REGIONS}/ap-lab").status_code == 200


def _deployed(control: ControlPlane, scaling: dict[str, int]) -> bool:
    """Deploy ``lab-bot`` to the region; False while the joined node's host is not yet
    known to the control plane (the deploy's first instance had nowhere to go)."""
    body = {
        "serviceName": "lab-bot",
        "image": f"{TEST_BOTS / 'probe'}:latest",
        "region": REGION,
        "autoScaling": scaling,
    }
    with control.client() as c:
        resp = c.post(f"/v1/organizations/{ORG}/services", json=body)
        assert resp.status_code == 200, resp.text
        agent = c.get(f"/v1/organizations/{ORG}/services/lab-bot").json()["body"]
    if agent["errors"]:
        return False
    try:
        control.wait_ready("lab-bot")
    except AssertionError:
        return False
    return True
