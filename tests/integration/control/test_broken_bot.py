"""A bot that can't start is told as it is: a failed deploy, or a recorded failed session.

Through the official CLI, as a new user would meet it: ``pipecat cloud deploy`` of a bot
that fails to import exits non-zero with the import error and ``agent status`` shows it;
a broken redeploy leaves the previous deployment serving; an instance that dies while a
session waits for it answers a Pipecat-Cloud-shaped error, and the session is listed
with its end state and the instance's traceback as its log lines.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import httpx

from tests.integration.control.helpers import refused, running_control
from tests.support.control import ORG, CloudCLI, ControlPlane
from tests.support.processes import TEST_BOTS

IMPORT_ERROR = TEST_BOTS / "import-error"
BREAKABLE = TEST_BOTS / "breakable"
PROBE = TEST_BOTS / "probe"
#: what the import-error bot raises, as its traceback's last line says
MISSING = "totally_missing_dependency"


def _start(control: ControlPlane, key: str, name: str, body: object = None) -> httpx.Response:
    with httpx.Client(base_url=control.url, timeout=60) as c:
        return c.post(
            f"/v1/public/{name}/start",
            json={"body": body or {}},
            headers={"Authorization": f"Bearer {key}"},
        )


def test_a_bot_that_fails_to_import_fails_its_deploy(cli: CloudCLI, control: ControlPlane) -> None:
    began = time.monotonic()
    deployed = cli.run("deploy", "broken", f"{IMPORT_ERROR}:latest", "--yes", check=False)
    took = time.monotonic() - began
    output = deployed.stdout + deployed.stderr
    assert deployed.returncode != 0, output
    assert took < 30, took
    assert MISSING in output, output

    status = cli.run("agent", "status", "broken", check=False)
    assert MISSING in status.stdout + status.stderr
    with control.client() as c:
        body = c.get(f"/v1/organizations/{ORG}/services/broken").json()["body"]
    assert body["ready"] is False and MISSING in body["errors"][0]["message"], body
    # an app's caller learns the agent is not ready; the traceback is the owner's to read
    body = refused(_start(control, control.public_key(), "broken"), 503, "SERVICE_UNAVAILABLE")
    assert "not ready" in body["error"] and MISSING not in body["error"], body
    logs = cli.run("agent", "logs", "broken").stdout
    assert MISSING in logs, logs


def test_a_broken_redeploy_leaves_the_previous_deployment_serving(
    cli: CloudCLI, control: ControlPlane
) -> None:
    cli.run("deploy", "steady", f"{PROBE}:latest", "--yes")
    redeployed = cli.run("deploy", "steady", f"{IMPORT_ERROR}:latest", "--yes", check=False)
    assert redeployed.returncode != 0
    assert MISSING in redeployed.stdout + redeployed.stderr

    started = _start(control, control.public_key(), "steady", {"action": "sleep", "seconds": 0})
    assert started.status_code == 200, started.text


def test_an_instance_that_dies_while_a_session_waits_is_a_recorded_session(
    tmp_path: Path,
) -> None:
    # Plain processes import the bot in every instance; a forked one inherits its parent's.
    with running_control(tmp_path, CATTERY_BACKEND_FORK="0") as control:
        cli = CloudCLI(control, tmp_path / "home")
        cli.home.mkdir()
        folder = tmp_path / "breakable"
        shutil.copytree(BREAKABLE, folder)
        cli.run("deploy", "fragile", f"{folder}:latest", "--yes")
        (folder / "BROKEN").write_text("")

        body = refused(_start(control, control.public_key(), "fragile"), 503)
        assert body["code"] == "PCC-AGENT-START-FAILED", body

        with control.client() as c:
            sessions = c.get(f"/v1/organizations/{ORG}/services/fragile/sessions").json()
        (failed,) = sessions["sessions"]
        assert failed["endState"] == "agent_error" and failed["endedAt"], failed
        assert failed["sessionId"] in body["error"], body
        logs = cli.run("agent", "logs", "fragile", "-s", failed["sessionId"]).stdout
        assert "broken on purpose" in logs, logs
