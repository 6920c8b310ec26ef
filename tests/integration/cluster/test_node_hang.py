"""A node that hangs (its Ray processes and node host SIGSTOPped; Ray would take a minute
to notice, and its instances keep answering meanwhile) is fenced by the control plane:
no start goes there, its sessions' Session API calls answer a coded 503, its instances
exit once their lease runs out and their sessions get an end state; after SIGCONT the node
takes starts again and nothing of before is served twice."""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from tests.integration.cluster.nodes import Sessions, signal_node, why_not_fenced
from tests.integration.control.helpers import wait_ended
from tests.support.cluster import WORKER_IPS, RayTestCluster
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

AGENT = "hang-bot"
HUNG_IP = WORKER_IPS[0]


def test_a_hung_node_is_fenced_and_its_sessions_end(
    ray_cluster: RayTestCluster, cluster_control: ControlPlane
) -> None:
    control = cluster_control
    control.deploy(AGENT, TEST_BOTS / "probe", autoScaling={"minAgents": 0, "maxAgents": 24})
    folder = Path(tempfile.mkdtemp(prefix="cattery-hang-", dir=ray_cluster.root))
    folder.chmod(0o1777)
    sessions = Sessions(control, AGENT, folder)
    node = next(n for n in ray_cluster.nodes if n.ip == HUNG_IP)
    stopped = False
    answers: list[str] = []
    try:
        (hung_session,) = sessions.on_node(HUNG_IP, 1)
        hung_pid = sessions.report(hung_session)["pid"]

        signal_node(node, signal.SIGSTOP)
        stopped = True
        hung_at = time.monotonic()

        def refused() -> httpx.Response | None:
            resp = sessions.session_api(hung_session)
            answers.append(f"{resp.status_code} {resp.text[:200]}")
            return resp if resp.status_code == 503 else None

        resp = wait_for(refused, timeout=30, interval=0.25, what="the fenced session's 503")
        fenced_after = time.monotonic() - hung_at
        assert resp.json()["code"] == "PCC-SESSION-UNREACHABLE", resp.text
        print(f"fenced {fenced_after:.1f} s after SIGSTOP")

        for _ in range(3):  # no start goes to the fenced node
            assert sessions.report(sessions.start())["node"] != HUNG_IP

        ended = wait_ended(control, AGENT, hung_session, timeout=60)
        print(f"ended {time.monotonic() - hung_at:.1f} s after SIGSTOP: {ended['endState']}")
        assert ended["endState"]
        wait_for(lambda: not psutil.pid_exists(hung_pid), timeout=30, what="the instance's exit")

        signal_node(node, signal.SIGCONT)
        stopped = False
        assert wait_ended(control, AGENT, hung_session)["endState"] == ended["endState"]
        assert sessions.session_api(hung_session).status_code == 404
        sessions.on_node(HUNG_IP, 1)  # back: it takes starts again
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{why_not_fenced(control, node, answers)}") from None
    finally:
        if stopped:
            signal_node(node, signal.SIGCONT)
        sessions.release.touch()
    for session_id in sessions.reports:
        wait_ended(control, AGENT, session_id, timeout=60)
    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/{AGENT}").status_code == 200
