"""A control plane whose container backend talks to the private podman, and the CLI on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.control.helpers import running_control
from tests.support.control import CloudCLI, ControlPlane

pytestmark = pytest.mark.container


@pytest.fixture
def container_control(
    tmp_path: Path, docker_client: docker.DockerClient, container_engine_url: str
) -> Iterator[ControlPlane]:
    with running_control(tmp_path, CATTERY_CONTAINER__ENGINE_URL=container_engine_url) as control:
        yield control


@pytest.fixture
def container_cli(container_control: ControlPlane, tmp_path: Path) -> CloudCLI:
    home = tmp_path / "home"
    home.mkdir()
    return CloudCLI(container_control, home)


def agent_containers(client: docker.DockerClient, agent: str) -> list:
    """The running containers of ``agent`` (``ORG/NAME``)."""
    return client.containers.list(filters={"label": f"dev.cattery.agent={agent}"})
