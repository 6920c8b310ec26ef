"""A control plane killed while its sessions run on worker nodes: the next one finds the
node hosts by name, reattaches the live session, and records its end when it ends.

It runs in a Ray namespace of its own, so its node hosts are not the shared control
plane's (a graceful stop takes a control plane's node hosts with it)."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import pytest

from tests.integration.control.helpers import get_session, start, wait_ended
from tests.support.cluster import WORKER_IPS, RayTestCluster
from tests.support.control import ORG, ControlPlane, control_plane_process
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for


@pytest.mark.timeout(300)
def test_a_restarted_control_plane_reattaches_sessions_on_nodes(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    env = {**ray_cluster.control_env(), "CATTERY_RAY__NAMESPACE": "cattery-restart"}
    state = tmp_path / "state"
    first = control_plane_process(state, tmp_path / "first.log", **env).start()
    second = None
    try:
        first.wait_ready("/healthz", timeout=120)
        control = ControlPlane(first, state)
        control.deploy("lasting", TEST_BOTS / "probe", autoScaling={"minAgents": 0})
        key = control.public_key()
        folder = Path(tempfile.mkdtemp(prefix="restart-", dir=ray_cluster.root))
        folder.chmod(0o1777)
        release, report = folder / "release", folder / "report.json"
        body = {"action": "until", "path": str(release), "report_to": str(report)}
        resp = start(control, key, "lasting", body)
        assert resp.status_code == 200, resp.text
        session_id = resp.json()["sessionId"]
        got = json.loads(wait_for(lambda: report.exists() and report.read_text(), what="report"))
        assert got["node"] in WORKER_IPS

        first.signal(signal.SIGKILL)
        first.wait()
        second = control_plane_process(state, tmp_path / "second.log", **env).start()
        second.wait_ready("/healthz", timeout=120)
        control = ControlPlane(second, state)
        assert get_session(control, "lasting", session_id)["endedAt"] is None
        release.touch()
        assert wait_ended(control, "lasting", session_id)["endState"] == "completed"
        with control.client() as c:
            assert c.delete(f"/v1/organizations/{ORG}/services/lasting").status_code == 200
    finally:
        first.stop()
        if second is not None:
            second.stop()

    def no_instances() -> bool:
        return (
            not [p for p in ray_cluster.leftovers() if "bundles" in " ".join(p.cmdline())] or None
        )

    wait_for(no_instances, timeout=30, what="the agent's processes on the nodes to exit")
