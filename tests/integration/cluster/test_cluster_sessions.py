"""Sessions of one agent on a Ray cluster: placed on several nodes, reached through the
control plane as local ones."""

from __future__ import annotations

from tests.integration.control.helpers import held_probe_sessions
from tests.support.cluster import WORKER_IPS, RayTestCluster
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS


def test_sessions_of_one_agent_land_on_several_nodes(
    ray_cluster: RayTestCluster, cluster_control: ControlPlane
) -> None:
    control = cluster_control
    control.deploy("spread", TEST_BOTS / "probe", autoScaling={"minAgents": 0, "maxAgents": 6})
    with held_probe_sessions(control, "spread", 4, ray_cluster.root) as reports:
        nodes = {report["node"] for report in reports}
        assert nodes == set(WORKER_IPS), nodes  # the head offers no CPU
    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/spread").status_code == 200
