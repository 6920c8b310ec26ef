"""A node that hangs (its Ray processes and node host SIGSTOPped; Ray would take a minute
to notice, and its instances keep answering meanwhile) is fenced by the control plane:
no start goes there, its sessions' Session API calls answer a coded 503, its instances
exit once their lease runs out and their sessions get an end state; after SIGCONT the node
takes starts again and nothing of before is served twice."""

from __future__ import annotations

import json
import signal
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from tests.integration.control.helpers import start, wait_ended
from tests.support.cluster import WORKER_IPS, RayNode, RayTestCluster
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

AGENT = "hang-bot"
HUNG_IP = WORKER_IPS[0]


class Sessions:
    """Sessions of ``AGENT`` that run until ``release`` exists, each reporting its node."""

    def __init__(self, control: ControlPlane, folder: Path) -> None:
        self.control = control
        self.key = control.public_key()
        self.folder = folder
        self.release = folder / "release"
        self.reports: dict[str, Path] = {}

    def start(self) -> str:
        report = self.folder / f"report-{len(self.reports)}.json"
        body = {"action": "until", "path": str(self.release), "report_to": str(report)}
        resp = start(self.control, self.key, AGENT, body)
        assert resp.status_code == 200, resp.text
        session_id = resp.json()["sessionId"]
        self.reports[session_id] = report
        return session_id

    def report(self, session_id: str) -> dict:
        path = self.reports[session_id]
        return wait_for(
            lambda: path.exists() and json.loads(path.read_text()),
            timeout=60,
            what=f"session {session_id}'s report",
        )

    def session_api(self, session_id: str) -> httpx.Response:
        with self.control.client(self.key) as c:
            return c.get(f"/v1/public/{AGENT}/sessions/{session_id}/status", timeout=10)


def ray_processes(node: RayNode) -> list[psutil.Process]:
    """The node's Ray processes: its ``ray start`` group's, and Ray's workers (the node
    host among them), which leave that group; not the instances, which keep serving."""
    found = []
    for proc in psutil.Process(node.proc.pid).children(recursive=True):
        try:
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("ray::"):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def hang(node: RayNode, sig: int) -> None:
    node.signal(sig)
    for proc in ray_processes(node):
        try:
            proc.send_signal(sig)
        except psutil.Error:
            continue


def test_a_hung_node_is_fenced_and_its_sessions_end(
    ray_cluster: RayTestCluster, cluster_control: ControlPlane
) -> None:
    control = cluster_control
    control.deploy(AGENT, TEST_BOTS / "probe", autoScaling={"minAgents": 0, "maxAgents": 8})
    folder = Path(tempfile.mkdtemp(prefix="cattery-hang-", dir=ray_cluster.root))
    folder.chmod(0o1777)
    sessions = Sessions(control, folder)
    node = next(n for n in ray_cluster.nodes if n.ip == HUNG_IP)
    stopped = False
    try:
        on_hung: list[str] = []
        for _ in range(8):  # spread by load: one lands on the node to hang soon enough
            session_id = sessions.start()
            if sessions.report(session_id)["node"] == HUNG_IP:
                on_hung.append(session_id)
                break
        assert on_hung, "no session landed on the node to hang"
        hung_session = on_hung[0]
        hung_pid = sessions.report(hung_session)["pid"]

        hang(node, signal.SIGSTOP)
        stopped = True
        hung_at = time.monotonic()

        def refused() -> httpx.Response | None:
            resp = sessions.session_api(hung_session)
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

        hang(node, signal.SIGCONT)
        stopped = False
        assert wait_ended(control, AGENT, hung_session)["endState"] == ended["endState"]
        assert sessions.session_api(hung_session).status_code == 404
    finally:
        if stopped:
            hang(node, signal.SIGCONT)
        sessions.release.touch()
    for session_id in sessions.reports:
        wait_ended(control, AGENT, session_id, timeout=60)
    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/{AGENT}").status_code == 200
