"""`pipecat cloud deploy` with no image, in a project made like `pipecat init`'s: the CLI
uploads its context, cattery builds it, and the agent runs the build's result."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import docker
import pytest

from tests.integration.control.helpers import running_control, start_session, wait_ended
from tests.support.control import ORG, CloudCLI, ControlPlane
from tests.support.podman import CATTERY_BASE_IMAGE
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

DOCKERFILE = """FROM dailyco/pipecat-base:latest

COPY ./requirements.txt requirements.txt

# ENV PCC_LOG_FEATURES_SUMMARY=true

RUN pip install --no-cache-dir --upgrade -r requirements.txt

COPY ./bot.py bot.py
"""


def make_project(folder: Path, agent: str, dockerfile: str = DOCKERFILE) -> Path:
    """A folder as `pipecat init` makes one for Pipecat Cloud: no image in pcc-deploy.toml."""
    folder.mkdir(parents=True)
    (folder / "Dockerfile").write_text(dockerfile)
    shutil.copy(TEST_BOTS / "probe" / "bot.py", folder / "bot.py")
    (folder / "requirements.txt").write_text("# pipecat-base and cattery hold all it needs\n")
    (folder / "pcc-deploy.toml").write_text(
        f'agent_name = "{agent}"\nsecret_set = ""\n\n[scaling]\n\tmin_agents = 0\n'
    )
    (folder / ".env").write_text("NOT_UPLOADED=1\n")
    return folder


def build_id_of(output: str) -> str:
    match = re.search(r"Build ID:\s*([0-9a-f-]{36})", output)
    assert match, output
    return match.group(1)


def public_key(cli: CloudCLI) -> str:
    created = cli.run("organizations", "keys", "create", "--name", "builds").stdout
    return next(tok for tok in created.split() if tok.startswith("pk_"))


def run_session(cli: CloudCLI, agent: str, key: str, report: Path) -> dict:
    started = cli.run(
        "agent", "start", agent, "-f", "-k", key, "-d", json.dumps({"report_to": str(report)})
    )
    assert "started successfully" in started.stdout
    return json.loads(wait_for(lambda: report.exists() and report.read_text(), what="report"))


def test_deploy_without_image_builds_a_folder_agent(
    cli: CloudCLI, control: ControlPlane, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "my-bot", "built-bot")
    deployed = cli.run("deploy", "--yes", cwd=project)
    assert "is ready" in deployed.stdout, deployed.stdout
    build_id = build_id_of(deployed.stdout)
    assert "Using cached build" not in deployed.stdout

    key = public_key(cli)
    got = run_session(cli, "built-bot", key, tmp_path / "report.json")
    assert got["body"] == {"report_to": str(tmp_path / "report.json")}

    listed = cli.json("build", "list")
    assert [b["id"] for b in listed["builds"]] == [build_id]
    status = cli.json("build", "status", build_id)
    assert status["status"] == "success"
    assert status["contextSizeBytes"] > 0 and status["buildDurationSeconds"] >= 1
    assert (
        "Step 1/4 : FROM dailyco/pipecat-base:latest" in cli.run("build", "logs", build_id).stdout
    )
    with control.client() as c:
        deployments = c.get(f"/v1/organizations/{ORG}/services/built-bot/deployments").json()
    assert deployments["deployments"][0]["buildId"] == build_id

    # the same folder again: the CLI finds the build by its context hash, no upload
    again = cli.run("deploy", "--yes", cwd=project)
    assert "Using cached build - no upload needed" in again.stdout, again.stdout
    assert build_id_of(again.stdout) == build_id
    assert len(cli.json("build", "list")["builds"]) == 1


def test_a_failing_dockerfile_is_a_failed_build_and_no_agent_changes(
    cli: CloudCLI, tmp_path: Path
) -> None:
    project = make_project(tmp_path / "good", "steady-bot")
    cli.run("deploy", "--yes", cwd=project)
    before = cli.json("agent", "deployments", "steady-bot")

    broken = DOCKERFILE + "RUN false\n"
    (project / "Dockerfile").write_text(broken)
    failed = cli.run("deploy", "--yes", cwd=project, check=False)
    assert failed.returncode != 0
    assert "Build failed" in failed.stdout + failed.stderr
    assert "CATTERY_CONTAINER__ENGINE_URL" in failed.stdout + failed.stderr
    builds = cli.json("build", "list", "--status", "failed")["builds"]
    assert len(builds) == 1
    logs = cli.run("build", "logs", builds[0]["id"]).stdout
    assert "RUN false" in logs
    assert cli.json("agent", "deployments", "steady-bot") == before


@pytest.mark.parametrize("bad_id", ["0e7d5f44-0d1a-4b89-9d4c-3f1a2b3c4d5e", "not-a-build"])
def test_deploy_of_an_unknown_build_is_refused(cli: CloudCLI, bad_id: str) -> None:
    done = cli.run("deploy", "ghost", "--build-id", bad_id, "--yes", check=False)
    assert done.returncode != 0
    assert "ghost" not in cli.run("agent", "list", check=False).stdout.split()


@pytest.mark.container
def test_with_an_engine_the_dockerfile_is_built_and_sessions_run_in_containers(
    tmp_path: Path, docker_client: docker.DockerClient, container_engine_url: str
) -> None:
    env = {
        "CATTERY_CONTAINER__ENGINE_URL": container_engine_url,
        "CATTERY_CONTAINER__PIPECAT_BASE_IMAGE": CATTERY_BASE_IMAGE,
    }
    with running_control(tmp_path, **env) as control:
        (tmp_path / "home").mkdir()
        cli = CloudCLI(control, tmp_path / "home")
        project = make_project(tmp_path / "boxed", "boxed-bot")
        deployed = cli.run("deploy", "--yes", cwd=project)
        assert "is ready" in deployed.stdout, deployed.stdout
        build_id = build_id_of(deployed.stdout)
        status = cli.json("build", "status", build_id)
        assert status["imageUri"].startswith("cattery-builds/default:")
        assert status["imageSizeBytes"] > 0
        logs = cli.run("build", "logs", build_id).stdout
        assert CATTERY_BASE_IMAGE in logs  # the stand-in for dailyco/pipecat-base

        session_id = start_session(control, control.public_key(), "boxed-bot", {"log_env": True})
        assert wait_ended(control, "boxed-bot", session_id)["endState"] == "completed"
        with control.client() as c:
            body = c.get(f"/v1/organizations/{ORG}/services/boxed-bot").json()["body"]
        assert body["deployment"]["manifest"]["spec"]["image"] == status["imageUri"]

        before = cli.json("agent", "deployments", "boxed-bot")
        (project / "Dockerfile").write_text(DOCKERFILE + "RUN false\n")
        failed = cli.run("deploy", "--yes", cwd=project, check=False)
        assert failed.returncode != 0 and "Build failed" in failed.stdout + failed.stderr
        broken = cli.json("build", "list", "--status", "failed")["builds"][0]
        assert "false" in cli.run("build", "logs", broken["id"]).stdout
        assert cli.json("agent", "deployments", "boxed-bot") == before
        cli.run("agent", "delete", "boxed-bot", "--force")
