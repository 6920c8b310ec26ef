"""A node that dies (its raylet and node host SIGKILLed during two calls): both sessions
get an end state with a reason soon after, new starts succeed on the other nodes, and the
agent's warm instances are back to their target. A plain worker then takes the node's
place, so the shared cluster is left as it was found."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

from tests.integration.cluster.nodes import Sessions, signal_node
from tests.integration.control.helpers import wait_ended, wait_pool
from tests.support.cluster import WORKER_IPS, RayTestCluster
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS, hand_over
from tests.support.waiting import wait_for

AGENT = "kill-bot"
KILLED_IP = WORKER_IPS[1]
WARM = 2


def test_a_killed_node_ends_its_sessions_and_its_warm_instances_come_back(
    ray_cluster: RayTestCluster, cluster_control: ControlPlane
) -> None:
    control = cluster_control
    control.deploy(AGENT, TEST_BOTS / "probe", autoScaling={"minAgents": WARM, "maxAgents": 12})
    wait_pool(control, AGENT, timeout=60, idle=WARM)
    folder = Path(tempfile.mkdtemp(prefix="cattery-kill-", dir=ray_cluster.root))
    folder.chmod(0o1777)
    sessions = Sessions(control, AGENT, folder)
    node = next(n for n in ray_cluster.nodes if n.ip == KILLED_IP)
    try:
        calls = sessions.on_node(KILLED_IP, 2)
        signal_node(node, signal.SIGKILL)
        node.proc.wait(30)
        killed_at = time.monotonic()
        ends = [wait_ended(control, AGENT, call, timeout=60) for call in calls]
        print(f"both calls ended {time.monotonic() - killed_at:.1f} s after the kill")
        assert all(ended["endState"] and ended["endReason"] for ended in ends), [
            (e["endState"], e.get("endReason")) for e in ends
        ]

        for _ in range(3):  # new starts succeed, elsewhere
            assert sessions.report(sessions.start())["node"] != KILLED_IP

        def warm_again() -> bool:
            with control.client() as c:
                body = c.get(f"/v1/organizations/{ORG}/services/{AGENT}").json()["body"]
            return body["pool"]["idle"] >= WARM

        wait_for(warm_again, timeout=60, interval=0.5, what="the warm target restored")
    finally:
        sessions.release.touch()
        ray_cluster.nodes.remove(node)
        plain = ray_cluster.add_node(KILLED_IP)
        hand_over(plain.proc.pid)  # the shared cluster's again, as before this test
        ray_cluster.wait_up(plain)
    for session_id in sessions.reports:
        wait_ended(control, AGENT, session_id, timeout=60)
    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/{AGENT}").status_code == 200
