"""What the failure tests do to a node, and the sessions they watch there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import psutil

from tests.integration.control.helpers import start
from tests.support.cluster import RayNode
from tests.support.control import ControlPlane
from tests.support.waiting import wait_for


def ray_processes(node: RayNode) -> list[psutil.Process]:
    """The node's Ray processes: its ``ray start`` group's, and Ray's workers (the node
    host among them), which leave that group but are the direct children of a process in
    it (the raylet); not the agent parents and instances, which the node host starts.

    Told apart by the process tree, not by their titles: a Ray worker rewrites its title
    at every call, and a title read at that moment may come back empty."""
    group = node.proc.pid
    found = []
    for proc in psutil.Process(group).children(recursive=True):
        try:
            if os.getpgid(proc.pid) == group or os.getpgid(proc.ppid()) == group:
                found.append(proc)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def signal_node(node: RayNode, sig: int) -> None:
    """``sig`` to the node's Ray processes and its node host."""
    workers = ray_processes(node)
    node.signal(sig)
    for proc in workers:
        try:
            proc.send_signal(sig)
        except psutil.Error:
            continue


def why_not_fenced(control: ControlPlane, node: RayNode, answers: list[str]) -> str:
    """What a failed fencing test shows: the Session API's last answers, the node's
    processes (stopped or not), and the control plane's lines about nodes."""
    states = []
    for proc in [psutil.Process(node.proc.pid), *psutil.Process(node.proc.pid).children(True)]:
        try:
            states.append(f"{proc.pid} {proc.status()} {' '.join(proc.cmdline())[:80]}")
        except psutil.Error:
            continue
    logs = control.process.logs().splitlines()
    wanted = ("WARNING", "ERROR", "Node", "heartbeat")
    lines = [line for line in logs if any(word in line for word in wanted)][-60:]
    return "\n".join(
        ["last answers:", *answers[-3:], "the node's processes:", *states, "about nodes:", *lines]
    )


class Sessions:
    """Sessions of one agent that run until ``release`` exists, each reporting its node."""

    def __init__(self, control: ControlPlane, agent: str, folder: Path) -> None:
        self.control = control
        self.agent = agent
        self.key = control.public_key()
        self.folder = folder
        self.release = folder / "release"
        self.reports: dict[str, Path] = {}

    def start(self) -> str:
        report = self.folder / f"report-{len(self.reports)}.json"
        body = {"action": "until", "path": str(self.release), "report_to": str(report)}
        resp = start(self.control, self.key, self.agent, body)
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

    def on_node(self, ip: str, count: int, tries: int = 12) -> list[str]:
        """Start sessions until ``count`` of them run on ``ip`` (placement spreads by load)."""
        found: list[str] = []
        for _ in range(tries):
            session_id = self.start()
            if self.report(session_id)["node"] == ip:
                found.append(session_id)
                if len(found) == count:
                    return found
        raise AssertionError(f"only {len(found)} of {tries} sessions landed on {ip}")

    def session_api(self, session_id: str) -> httpx.Response:
        with self.control.client(self.key) as c:
            return c.get(f"/v1/public/{self.agent}/sessions/{session_id}/status", timeout=10)
