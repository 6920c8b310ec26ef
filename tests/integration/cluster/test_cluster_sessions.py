"""Sessions of one agent on a Ray cluster: placed on several nodes, reached through the
control plane as local ones."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tests.integration.control.helpers import start, wait_ended
from tests.support.cluster import WORKER_IPS, RayTestCluster
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for


def test_sessions_of_one_agent_land_on_several_nodes(
    ray_cluster: RayTestCluster, cluster_control: ControlPlane
) -> None:
    control = cluster_control
    control.deploy("spread", TEST_BOTS / "probe", autoScaling={"minAgents": 0, "maxAgents": 6})
    key = control.public_key()
    folder = Path(tempfile.mkdtemp(prefix="cattery-spread-", dir=ray_cluster.root))
    folder.chmod(0o1777)
    release = folder / "release"
    sessions, reports = [], []
    try:
        for n in range(4):
            report = folder / f"report-{n}.json"
            body = {"action": "until", "path": str(release), "report_to": str(report)}
            resp = start(control, key, "spread", body)
            assert resp.status_code == 200, resp.text
            sessions.append(resp.json()["sessionId"])
            reports.append(report)
        wait_for(lambda: all(r.exists() for r in reports), timeout=60, what="the reports")
        nodes = {json.loads(r.read_text())["node"] for r in reports}
        assert nodes == set(WORKER_IPS), nodes  # the head offers no CPU
    finally:
        release.touch()
    for session_id in sessions:
        wait_ended(control, "spread", session_id)
    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/spread").status_code == 200
