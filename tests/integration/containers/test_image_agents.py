"""Agents deployed as images: the official CLI deploys a user's cattery-base image, and an
image in pipecat-base's pattern runs unchanged."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from cattery.backends.profiles import GIB
from tests.integration.containers.conftest import agent_containers
from tests.integration.control.helpers import (
    list_sessions,
    logs,
    put_secrets,
    running_control,
    start_session,
    wait_ended,
)
from tests.support.containers import build_image
from tests.support.control import CloudCLI, ControlPlane
from tests.support.podman import CATTERY_BASE_IMAGE
from tests.support.processes import EXAMPLES, TEST_BOTS
from tests.support.telephony import TwilioCall
from tests.support.waiting import wait_for

pytestmark = pytest.mark.container

PROBE = TEST_BOTS / "probe"
PIPECAT_BASE_LIKE = Path(__file__).resolve().parents[2] / "images" / "pipecat-base-like"


def test_cli_deploys_an_image_and_its_sessions_run_in_containers(
    container_control: ControlPlane,
    container_cli: CloudCLI,
    docker_client: docker.DockerClient,
    user_image_of,
) -> None:
    cli, control = container_cli, container_control
    image = user_image_of(PROBE)
    cli.run("secrets", "set", "probe-secrets", "PROBE_SECRET=s3cr3t-in-a-box", "--skip")
    deployed = cli.run(
        "deploy",
        "probe-box",
        image,
        "--yes",
        "--min-agents",
        "1",
        "--max-agents",
        "2",
        "--secrets",
        "probe-secrets",
        "--profile",
        "agent-2x",
    )
    assert "is ready" in deployed.stdout

    warm = wait_for(lambda: agent_containers(docker_client, "default/probe-box"), what="warm")
    config = warm[0].attrs
    assert config["HostConfig"]["NanoCpus"] == 1_000_000_000  # agent-2x: 1 CPU
    assert config["HostConfig"]["Memory"] == 2 * GIB  # and 2 GB
    assert "PROBE_SECRET=s3cr3t-in-a-box" in config["Config"]["Env"]
    bindings = config["HostConfig"]["PortBindings"]["8080/tcp"]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}

    session_id = start_session(control, control.public_key(), "probe-box", {"log_env": True})
    assert wait_ended(control, "probe-box", session_id)["endState"] == "completed"

    def session_logs() -> str | None:
        out = cli.run("agent", "logs", "probe-box", "-s", session_id, "-n", "500").stdout
        return out if "probe bot done" in out else None

    out = wait_for(session_logs, what="the container's lines under the session")
    assert "probe env" in out and "s3cr3t-in-a-box" in out

    cli.run("agent", "delete", "probe-box", "--force")
    wait_for(lambda: not agent_containers(docker_client, "default/probe-box"), what="removal")


def test_an_image_in_pipecat_base_pattern_runs_unchanged(
    container_control: ControlPlane, docker_client: docker.DockerClient
) -> None:
    control = container_control
    image = build_image(docker_client, PIPECAT_BASE_LIKE, "localhost/pipecat-base-like:1")
    put_secrets(control, "like-secrets", PROBE_SECRET="like-value")
    with control.client() as c:
        resp = c.post(
            "/v1/organizations/default/services",
            json={
                "serviceName": "like",
                "image": image,
                "secretSet": "like-secrets",
                "autoScaling": {"minAgents": 0, "maxAgents": 1},
            },
        )
        assert resp.status_code == 200, resp.text
    control.wait_ready("like")
    session_id = start_session(
        control, control.public_key(), "like", {"hello": "world", "seconds": 2}
    )
    (serving,) = agent_containers(docker_client, "default/like")
    assert wait_ended(control, "like", session_id)["endState"] == "completed"

    def session_logs() -> str | None:
        text = "\n".join(entry["log"] for entry in logs(control, "like", session_id))
        return text if "PROBE_SECRET" in text else None

    text = wait_for(session_logs, what="the image's lines under the session")
    assert "got {'hello': 'world', 'seconds': 2} as PipecatSessionArguments" in text
    assert "PROBE_SECRET=like-value" in text
    # one session per instance: the container that served it is discarded (a new one may
    # be kept warm for the cooldown)
    wait_for(
        lambda: serving.id not in {c.id for c in agent_containers(docker_client, "default/like")},
        what="the session's container discarded",
    )


def test_backend_container_runs_folder_agents_in_the_base_image(
    tmp_path: Path, docker_client: docker.DockerClient, container_engine_url: str
) -> None:
    env = {"CATTERY_CONTAINER__ENGINE_URL": container_engine_url, "CATTERY_BACKEND": "container"}
    with running_control(tmp_path, **env) as control:
        control.deploy("folder", PROBE, autoScaling={"minAgents": 1, "maxAgents": 1})
        (warm,) = wait_for(lambda: agent_containers(docker_client, "default/folder"), what="warm")
        assert CATTERY_BASE_IMAGE in warm.image.tags
        mounts = {m["Destination"]: m for m in warm.attrs["Mounts"]}
        assert mounts["/app"]["Source"] == str(PROBE) and mounts["/app"]["RW"] is False
        session_id = start_session(control, control.public_key(), "folder", {"action": "sleep"})
        assert wait_ended(control, "folder", session_id)["endState"] == "completed"
        lines = [entry["log"] for entry in logs(control, "folder", session_id)]
        assert any("probe bot action 'sleep'" in line for line in lines)


async def test_a_phone_call_is_bridged_to_a_container(
    container_control: ControlPlane, docker_client: docker.DockerClient, user_image_of
) -> None:
    control = container_control
    image = user_image_of(EXAMPLES / "echo-twilio")
    with control.client() as c:
        # agent-3x: the echo must be up within the call's first second, and agent-1x's
        # half a CPU makes that depend on the machine's load
        body = {
            "serviceName": "echo",
            "image": image,
            "autoScaling": {"minAgents": 1},
            "agentProfile": "agent-3x",
        }
        assert c.post("/v1/organizations/default/services", json=body).status_code == 200
    control.wait_ready("echo")
    # the call starts once the warm instance serves: a 2 s call can't wait for a container
    # to start on a loaded machine
    (warm,) = wait_for(lambda: agent_containers(docker_client, "default/echo"), what="warm")
    wait_for(
        lambda: "Application startup complete" in warm.logs().decode(errors="replace"),
        timeout=60,
        what="the warm container's runtime",
    )
    call = TwilioCall()
    await call.play(f"{control.process.ws_url}/ws/twilio?serviceHost=echo.default", seconds=2.0)
    assert call.received_seconds >= 1.0, f"echoed {call.received_seconds:.2f} s of 2 s"
    (session,) = wait_for(
        lambda: [s for s in list_sessions(control, "echo") if s["endState"]], what="session end"
    )
    assert session["endState"] == "completed" and session["transport"] == "twilio"
