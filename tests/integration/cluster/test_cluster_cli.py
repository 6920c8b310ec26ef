"""The official `pipecat cloud` CLI against a control plane whose instances run on a Ray
cluster's worker nodes: deploy, start, sessions, logs and delete work unchanged."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tests.support.cluster import WORKER_IPS, RayTestCluster
from tests.support.control import ORG, CloudCLI, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"


def test_the_cli_scenario_runs_on_the_cluster(
    ray_cluster: RayTestCluster, cluster_control: ControlPlane
) -> None:
    control = cluster_control
    home = Path(tempfile.mkdtemp(prefix="cli-", dir=ray_cluster.root))
    cli = CloudCLI(control, home)
    deployed = cli.run(
        "deploy", "cli-probe", f"{PROBE}:latest", "--yes", "--min-agents", "1", "--max-agents", "2"
    )
    assert "is ready" in deployed.stdout
    key = cli.run("organizations", "keys", "create", "--name", "cluster").stdout
    public_key = next(tok for tok in key.split() if tok.startswith("pk_"))

    report = home / "report.json"
    home.chmod(0o1777)
    body = json.dumps({"report_to": str(report), "action": "sleep", "seconds": 2.5})
    started = cli.run("agent", "start", "cli-probe", "-f", "-k", public_key, "-d", body)
    assert "started successfully" in started.stdout
    got = json.loads(wait_for(lambda: report.exists() and report.read_text(), what="report"))
    assert got["node"] in WORKER_IPS, got
    session_id = got["session_id"]

    def ended() -> bool:
        sessions = cli.run("agent", "sessions", "cli-probe").stdout
        return session_id in sessions and "Complete" in sessions

    wait_for(ended, timeout=60, what="the session listed as complete")
    assert session_id in cli.run("agent", "sessions", "cli-probe", "--id", session_id).stdout
    logs = wait_for(
        lambda: (
            (out := cli.run("agent", "logs", "cli-probe", "-s", session_id, "-n", "500").stdout)
            and "probe bot action" in out
            and out
        ),
        timeout=30,
        what="the session's log lines",
    )
    assert "probe bot action" in logs
    with control.client() as c:
        detail = c.get(f"/v1/organizations/{ORG}/services/cli-probe/sessions/{session_id}")
    assert detail.status_code == 200, detail.text
    metrics = detail.json()["resourceMetrics"]  # sampled on the node, stored here
    assert metrics["sampleCount"] >= 1 and metrics["memoryBytesP50"] > 0, metrics

    cli.run("agent", "delete", "cli-probe", "-f")
    assert "cli-probe" not in cli.run("agent", "list", check=False).stdout.split()
