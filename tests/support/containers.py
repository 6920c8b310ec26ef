"""Images and containers for tests, through the Docker Engine API of the private podman.

``user_image`` builds what a user would: the three-line Dockerfile on cattery-base around a
bot folder. ``RuntimeContainer`` runs an image the way the runtime tests run a process, so
the same contract tests drive either.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import docker
import httpx
from docker.models.containers import Container

from tests.support.podman import CATTERY_BASE_IMAGE
from tests.support.processes import OnLoopback
from tests.support.waiting import wait_for

#: the Dockerfile a user writes on cattery-base, as on pipecat-base
USER_DOCKERFILE = f"""\
FROM {CATTERY_BASE_IMAGE}
COPY requirements.txt requirements.txt
RUN pip install --no-cache-dir -r requirements.txt
COPY bot.py bot.py
"""
#: the label every test container carries, so a leak check can find them
TEST_LABEL = "dev.cattery.test"


def build_image(client: docker.DockerClient, context: Path, tag: str) -> str:
    """Build ``context`` as ``tag``, on loopback only (a test build needs no network)."""
    client.images.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="host")
    return tag


def user_image(client: docker.DockerClient, bot_folder: Path, tag: str) -> str:
    """A user's image of ``bot_folder`` on cattery-base, built from the three-line Dockerfile."""
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy(bot_folder / "bot.py", context / "bot.py")
        requirements = bot_folder / "requirements.txt"
        if requirements.exists():
            shutil.copy(requirements, context / "requirements.txt")
        else:
            (context / "requirements.txt").write_text("# the base image has all this bot needs\n")
        (context / "Dockerfile").write_text(USER_DOCKERFILE)
        return build_image(client, context, tag)


@dataclass
class RuntimeContainer(OnLoopback):
    """A container serving the runtime contract on a loopback port; ``mounts`` are shared
    at the same path inside (bots write their reports there)."""

    client: docker.DockerClient
    image: str
    mounts: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    container: Container | None = None
    port: int = 0

    def start(self) -> RuntimeContainer:
        self.container = self.client.containers.run(
            self.image,
            detach=True,
            environment=self.env,
            ports={"8080/tcp": ("127.0.0.1", None)},
            volumes={str(m): {"bind": str(m), "mode": "rw"} for m in self.mounts},
            labels={TEST_LABEL: "1"},
            init=True,
        )

        def published() -> int | None:
            assert self.container is not None
            self.container.reload()
            bindings = (self.container.ports or {}).get("8080/tcp")
            return int(bindings[0]["HostPort"]) if bindings else None

        self.port = wait_for(published, timeout=30, what="the container's published port")
        return self

    def wait_ready(self, path: str = "/livez", timeout: float = 60.0) -> RuntimeContainer:
        def ready() -> bool:
            assert self.container is not None
            self.container.reload()
            if self.container.status == "exited":
                raise AssertionError(f"container exited:\n{self.logs()}")
            try:
                return httpx.get(self.url + path, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=timeout, what=f"{self.url}{path}")
        return self

    def logs(self) -> str:
        assert self.container is not None
        return self.container.logs().decode(errors="replace")

    def stop(self) -> None:
        if self.container is not None:
            self.container.remove(force=True)
