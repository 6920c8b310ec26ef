"""A control plane killed with SIGKILL while its containers run, then started on its state:
the containers it left are removed, their sessions get an end state, the pool comes back."""

from __future__ import annotations

import signal
from pathlib import Path

import docker
import pytest

from tests.integration.containers.conftest import agent_containers
from tests.integration.control.helpers import running_control, start_session, wait_ended
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.container


def test_containers_left_by_a_killed_control_plane_are_cleared(
    tmp_path: Path, docker_client: docker.DockerClient, container_engine_url: str, user_image_of
) -> None:
    image = user_image_of(TEST_BOTS / "probe")
    env = {"CATTERY_CONTAINER__ENGINE_URL": container_engine_url}
    body = {"serviceName": "probe", "image": image, "autoScaling": {"minAgents": 1}}
    with running_control(tmp_path, **env) as first:
        with first.client() as c:
            assert c.post("/v1/organizations/default/services", json=body).status_code == 200
        first.wait_ready("probe")
        session_id = start_session(first, first.public_key(), "probe", {"action": "forever"})
        left = wait_for(
            lambda: (
                len(agent_containers(docker_client, "default/probe")) == 2
                and agent_containers(docker_client, "default/probe")
            ),
            what="the session's container and a warm one",
        )
        first.process.signal(signal.SIGKILL)
        first.process.wait()
    assert len(agent_containers(docker_client, "default/probe")) == 2  # outlived their owner

    with running_control(tmp_path, **env) as second:
        assert wait_ended(second, "probe", session_id)["endState"] == "terminated"
        second.wait_ready("probe")
        old = {c.id for c in left}
        wait_for(
            lambda: not old & {c.id for c in agent_containers(docker_client, "default/probe")},
            what="the old containers removed",
        )
        warm = wait_for(lambda: agent_containers(docker_client, "default/probe"), what="warm")
        assert len(warm) == 1
