"""The official `pipecat cloud` CLI and `pipecatcloud` SDK, unchanged, against `cattery serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.control.helpers import ON_POSTGRESQL
from tests.support.control import ORG, CloudCLI, ControlPlane
from tests.support.processes import TEST_BOTS, base_env
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"


def read_json(path: Path) -> dict:
    return json.loads(wait_for(lambda: path.exists() and path.read_text(), what=str(path)))


@ON_POSTGRESQL
def test_official_cli_end_to_end(cli: CloudCLI, control: ControlPlane, tmp_path: Path) -> None:
    cli.run("secrets", "set", "probe-secrets", "PROBE_SECRET=s3cr3t-value", "--skip")
    sets = cli.run("secrets", "list").stdout
    assert "probe-secrets" in sets
    assert "PROBE_SECRET" in cli.run("secrets", "list", "probe-secrets").stdout

    deployed = cli.run(
        "deploy",
        "probe",
        f"{PROBE}:latest",
        "--yes",
        "--min-agents",
        "1",
        "--max-agents",
        "2",
        "--secrets",
        "probe-secrets",
    )
    assert "is ready" in deployed.stdout
    assert "probe" in cli.run("agent", "list").stdout
    status = cli.run("agent", "status", "probe").stdout
    assert "Min Agents: 1" in status and "Max Agents: 2" in status

    key = cli.run("organizations", "keys", "create", "--name", "cli-test").stdout
    public_key = next(tok for tok in key.split() if tok.startswith("pk_"))
    assert public_key in cli.run("organizations", "keys", "list").stdout

    report = tmp_path / "report.json"
    started = cli.run(
        "agent",
        "start",
        "probe",
        "-f",
        "-k",
        public_key,
        "-d",
        json.dumps({"report_to": str(report)}),
    )
    assert "started successfully" in started.stdout
    got = read_json(report)
    assert got["body"] == {"report_to": str(report)}
    assert got["env"] == {"PROBE_SECRET": "s3cr3t-value"}
    session_id = got["session_id"]

    def ended() -> bool:
        sessions = cli.run("agent", "sessions", "probe").stdout
        return session_id in sessions and "Complete" in sessions

    wait_for(ended, timeout=30, what="session listed as complete")
    detail = cli.run("agent", "sessions", "probe", "--id", session_id).stdout
    assert session_id in detail
    logs = cli.run("agent", "logs", "probe", "-s", session_id, "-n", "500").stdout
    assert "probe bot action" in logs

    for _ in range(10):
        assert "latest" in cli.run("agent", "deployments", "probe").stdout

    started = cli.run(
        "agent", "start", "probe", "-f", "-k", public_key, "-d", '{"action": "forever"}'
    )
    live_id = next(
        ln.split(":", 1)[1].strip() for ln in started.stdout.splitlines() if "Session ID" in ln
    )
    cli.run("agent", "stop", "probe", "-s", live_id, "-f")

    def terminated() -> bool:
        with control.client() as c:
            resp = c.get(f"/v1/organizations/{ORG}/services/probe/sessions/{live_id}")
        return resp.json()["endState"] == "terminated"

    wait_for(terminated, timeout=30, what="stopped session recorded as terminated")

    assert "default" in cli.run("organizations", "list").stdout
    assert "local" in cli.run("regions", "list").stdout
    assert "admin@localhost" in cli.run("auth", "whoami").stdout

    cli.run("secrets", "unset", "probe-secrets", "PROBE_SECRET", "--skip")
    assert "PROBE_SECRET" not in cli.run("secrets", "list", "probe-secrets").stdout
    cli.run("secrets", "delete", "probe-secrets", "--skip")
    assert "probe-secrets" not in cli.run("secrets", "list", check=False).stdout
    cli.run("agent", "delete", "probe", "-f")
    assert "probe" not in cli.run("agent", "list", check=False).stdout.split()
    regions_walk(cli)


def regions_walk(cli: CloudCLI) -> None:
    """Regions are stored: registered, listed, shown, deployed to, kept while used."""
    cli.run("regions", "register", "pce-lab", "--display-name", "Lab", "--architectures", "amd64")
    assert "pce-lab" in cli.run("regions", "list").stdout
    shown = cli.run("regions", "show", "pce-lab").stdout
    assert "Lab" in shown and "pending" in shown
    minted = cli.run("--output", "json", "regions", "enroll-token", "pce-lab").stdout
    assert json.loads(minted)["token"].startswith("cattery_enroll_")
    refused = cli.run(
        "deploy", "nowhere-bot", f"{PROBE}:latest", "--region", "mars", "--yes", check=False
    )
    assert refused.returncode != 0
    cli.run("deploy", "lab-bot", f"{PROBE}:latest", "--region", "pce-lab", "--yes")
    assert "pce-lab" in cli.run("agent", "list").stdout
    kept = cli.run("regions", "delete", "pce-lab", "--yes", check=False)
    assert kept.returncode != 0 and "1 agent(s)" in kept.stdout + kept.stderr
    cli.run("agent", "delete", "lab-bot", "-f")
    cli.run("regions", "delete", "pce-lab", "--yes")
    assert "pce-lab" not in cli.run("regions", "list").stdout


SDK_SCRIPT = """
import asyncio, json, sys
from pipecatcloud.exception import AgentStartError
from pipecatcloud.session import Session, SessionParams

async def start(agent, key, data):
    try:
        result = await Session(agent, key, SessionParams(data=data, use_daily=False)).start()
        return {"ok": result}
    except AgentStartError as exc:
        return {"error_code": exc.error_code}

calls = json.loads(sys.argv[1])
print(json.dumps([asyncio.run(start(*call)) for call in calls]))
"""


def test_sdk_session_start_and_its_errors(control: ControlPlane) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 1})
    public_key = control.public_key()
    calls = [
        ["probe", public_key, {"action": "forever"}],
        ["probe", "pk_not_a_real_key", {}],
        ["nobody-here", public_key, {}],
        ["probe", public_key, {}],
    ]
    env = {**base_env(), "PIPECAT_API_HOST": control.url}
    done = subprocess.run(
        [sys.executable, "-c", SDK_SCRIPT, json.dumps(calls)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    first, bad_key, unknown, full = json.loads(done.stdout.strip().splitlines()[-1])
    assert first["ok"]["sessionId"]
    assert bad_key == {"error_code": "401"}
    assert unknown == {"error_code": "NOT_FOUND"}
    assert full == {"error_code": "PCC-AGENT-AT-CAPACITY"}
    with control.client() as c:
        resp = c.delete(
            f"/v1/organizations/{ORG}/services/probe/sessions/{first['ok']['sessionId']}"
        )
        assert resp.status_code == 200
