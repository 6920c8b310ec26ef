"""cattery-base as pipecat-base users know it: pre-app.sh runs first, IMAGE_VERSION is set."""

from __future__ import annotations

import shutil
from importlib.metadata import version
from pathlib import Path

import docker
import pytest

from tests.support.containers import USER_DOCKERFILE, RuntimeContainer, build_image
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

pytestmark = pytest.mark.container


def test_pre_app_script_runs_before_the_runtime(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(TEST_BOTS / "probe" / "bot.py", context / "bot.py")
    (context / "requirements.txt").write_text("")
    (context / "pre-app.sh").write_text('echo "pre-app ran in $(pwd)"\n')
    (context / "Dockerfile").write_text(USER_DOCKERFILE + "COPY pre-app.sh pre-app.sh\n")
    image = build_image(docker_client, context, "localhost/cattery-test-pre-app:1")
    rt = RuntimeContainer(docker_client, image).start()
    try:
        rt.wait_ready()
        logs = wait_for(lambda: "Serving /app/bot.py" in rt.logs() and rt.logs(), what="logs")
        assert logs.index("pre-app ran in /app") < logs.index("Serving /app/bot.py")
        assert f"(image version {version('cattery')})" in logs
    finally:
        rt.stop()
    docker_client.images.remove(image, force=True)
