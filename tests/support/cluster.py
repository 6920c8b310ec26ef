"""A real Ray cluster on loopback for tests: a head and worker nodes, each its own address.

Every node is ``ray start --block`` in a process group of its own (its raylet, its workers
and our node hosts are in it), so stopping the cluster is signalling those groups, never
``ray stop`` (which would stop every Ray process on the machine). Token auth is on, and
the token reaches each node and the control plane through the environment.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.support.waiting import wait_for

HEAD_IP = "127.0.0.2"
WORKER_IPS = ("127.0.0.3", "127.0.0.4")
#: what each test node offers: enough for a burst of agent-1x instances on 2 real cores
NODE_CPUS = 24
NODE_MEMORY = 48 * 2**30
#: what ``ray start --block`` prints once its node is up
NODE_UP = "Ray runtime started"


def ray_command() -> str:
    return str(Path(sys.executable).with_name("ray"))


@dataclass
class RayNode:
    ip: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class RayTestCluster:
    """Start with ``start()``; ``stop()`` ends every node's processes and what they left."""

    root: Path
    port: int = 6390
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{HEAD_IP}:{self.port}"

    @property
    def node_state_dir(self) -> Path:
        return self.root / "nodes"

    def env(self) -> dict[str, str]:
        """What every Ray process (nodes, drivers) of this cluster needs."""
        return {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # a raylet waits this long for its agents (Python processes): on a busy
            # machine they take longer than Ray's default, and the raylet gives up
            "RAY_agent_register_timeout_ms": "120000",
        }

    def control_env(self) -> dict[str, str]:
        """A control plane's environment for this cluster (the driver runs on the head)."""
        return {
            "CATTERY_RAY__AUTH_TOKEN": self.token,
            "CATTERY_RAY__ADDRESS": self.address,
            "CATTERY_RAY__NODE_IP": HEAD_IP,
            "CATTERY_RAY__NODE_STATE_DIR": str(self.node_state_dir),
        }

    def _start_node(self, ip: str, *args: str, cpus: int = NODE_CPUS) -> RayNode:
        log_path = self.root / f"ray-{ip}.log"
        command = [
            ray_command(),
            "start",
            "--block",
            "--node-ip-address",
            ip,
            "--num-cpus",
            str(cpus),
            "--memory",
            str(NODE_MEMORY),
            "--object-store-memory",
            str(100 * 2**20),
            *args,
        ]
        env = {**os.environ, **self.env()}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        node = RayNode(ip, proc, log_path)
        self.nodes.append(node)
        return node

    def start(self, workers: tuple[str, ...] = WORKER_IPS) -> RayTestCluster:
        """The head, then each worker once the one before is up (nodes joining at once
        can time out registering on a busy machine)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.node_state_dir.mkdir(exist_ok=True)
        self.node_state_dir.chmod(0o755)
        self._up(
            lambda: self._start_node(  # no CPU to offer: instances run on the workers
                HEAD_IP,
                "--head",
                "--port",
                str(self.port),
                "--include-dashboard=false",
                "--disable-usage-stats",
                "--temp-dir",
                str(self.root / "ray"),
                cpus=0,
            )
        )
        for ip in workers:
            self._up(lambda ip=ip: self.add_node(ip))
        return self

    def _up(self, start: Callable[[], RayNode], tries: int = 2) -> RayNode:
        """A node started, and started again if it gives up (a raylet that could not
        register in time on a busy machine)."""
        for _ in range(tries - 1):
            node = start()
            if self.came_up(node):
                return node
            node.signal(signal.SIGKILL)
            node.proc.wait(10)
            self.nodes.remove(node)
        node = start()
        self.wait_up(node)
        return node

    def wait_up(self, node: RayNode, timeout: float = 120) -> None:
        """Return once the node is up; fail as soon as its ``ray start`` exited."""
        if not self.came_up(node, timeout):
            raise AssertionError(f"ray on {node.ip} exited:\n{node.log_path.read_text()}")

    def came_up(self, node: RayNode, timeout: float = 120) -> bool:
        """Whether the node came up (False as soon as its ``ray start`` exited)."""

        def settled() -> str | None:
            if NODE_UP in node.log_path.read_text():
                return "up"
            return "exited" if node.proc.poll() is not None else None

        return wait_for(settled, timeout=timeout, what=f"the Ray node on {node.ip}") == "up"

    def add_node(self, ip: str, *args: str) -> RayNode:
        return self._start_node(ip, "--address", self.address, *args)

    def leftovers(self) -> list[psutil.Process]:
        """Processes still running from this cluster: its nodes' groups, and anything
        whose command line names its folder (instances and forking parents)."""
        root = str(self.root)
        groups = {node.proc.pid for node in self.nodes}
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.pid == os.getpid():
                    continue
                in_group = os.getpgid(proc.pid) in groups
                names_root = any(root in part for part in proc.info["cmdline"] or [])
            except (psutil.Error, ProcessLookupError):
                continue
            if in_group or names_root:
                found.append(proc)
        return found

    def stop(self) -> list[str]:
        """Stop every node; the command lines of processes that had to be killed after."""
        for node in reversed(self.nodes):
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.proc.wait(20)
            except subprocess.TimeoutExpired:
                node.signal(signal.SIGKILL)
                node.proc.wait(5)

        def gone() -> bool:
            return not [p for p in self.leftovers() if p.status() != psutil.STATUS_ZOMBIE]

        killed: list[str] = []
        try:
            wait_for(gone, timeout=15, what="the cluster's processes to exit")
        except AssertionError:
            for proc in self.leftovers():
                try:
                    killed.append(" ".join(proc.cmdline())[:200])
                    proc.kill()
                except psutil.Error:
                    pass
        for node in self.nodes:
            node.signal(signal.SIGKILL)  # any straggler of its group
        shutil.rmtree(self.root, ignore_errors=True)
        return killed
