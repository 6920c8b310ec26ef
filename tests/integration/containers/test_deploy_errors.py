"""A deploy whose image can't run fails at once, saying why, and leaves no agent behind."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest

from tests.integration.control.helpers import refused, running_control
from tests.support.control import ORG, CloudCLI, ControlPlane
from tests.support.podman import CATTERY_BASE_IMAGE, DEFAULT_INIT_PATH, REGISTRY_STANDIN

pytestmark = pytest.mark.container

SERVICES = f"/v1/organizations/{ORG}/services"


def assert_no_agent(control: ControlPlane, name: str) -> None:
    with control.client() as c:
        assert c.get(f"{SERVICES}/{name}").status_code == 404
        assert name not in str(c.get(SERVICES).json())


def test_missing_and_malformed_images_are_refused_with_nothing_created(
    container_control: ControlPlane, container_cli: CloudCLI, docker_client: docker.DockerClient
) -> None:
    control = container_control
    with control.client() as c:
        for image, code in (
            ("localhost/no-such-image:1", "PCC_IMAGE_NOT_FOUND"),
            ("Not A Reference!:1", "PCC_IMAGE_REFERENCE_INVALID"),
            ("localhost/UPPER/case:1", "PCC_IMAGE_REFERENCE_INVALID"),
        ):
            body = {"serviceName": "ghost", "image": image}
            error = refused(c.post(SERVICES, json=body), 400, code)
            assert image in error["error"]
            assert_no_agent(control, "ghost")
        profile = {"serviceName": "ghost", "image": "x/y:1", "agentProfile": "agent-9x"}
        assert "agent-9x" in refused(c.post(SERVICES, json=profile), 400)["error"]
    done = container_cli.run("deploy", "ghost", "localhost/no-such-image:1", "--yes", check=False)
    assert done.returncode != 0
    assert "PCC_IMAGE_NOT_FOUND" in done.stdout + done.stderr or "not found" in done.stdout
    assert_no_agent(control, "ghost")


def test_an_engine_that_is_down_is_a_503_with_nothing_created(tmp_path: Path) -> None:
    down = f"unix://{tmp_path / 'no-engine.sock'}"
    with running_control(tmp_path, CATTERY_CONTAINER__ENGINE_URL=down) as control:
        with control.client() as c:
            body = {"serviceName": "ghost", "image": "localhost/anything:1"}
            error = refused(c.post(SERVICES, json=body), 503, "PCC_CONTAINER_ENGINE_UNAVAILABLE")
            assert "no-engine.sock" in error["error"]
        assert_no_agent(control, "ghost")


def test_an_engine_that_cannot_start_containers_fails_deploys_with_its_reason(
    tmp_path: Path, engine_without_init: str
) -> None:
    """An engine that answers but can't start a container with the options instances get
    (here: its init binary is missing) is found at start and refuses each image deploy
    with the engine's own reason, before anything is written."""
    with running_control(tmp_path, CATTERY_CONTAINER__ENGINE_URL=engine_without_init) as control:
        with control.client() as c:
            body = {"serviceName": "ghost", "image": CATTERY_BASE_IMAGE, "minAgents": 1}
            error = refused(c.post(SERVICES, json=body), 503, "PCC_CONTAINER_ENGINE_UNAVAILABLE")
            assert str(DEFAULT_INIT_PATH) in error["error"], error
            assert CATTERY_BASE_IMAGE in error["error"], error
        assert_no_agent(control, "ghost")
        started = (tmp_path / "serve.log").read_text()
        assert str(DEFAULT_INIT_PATH) in started and "image agents will not run" in started


class RegistryStandin(BaseHTTPRequestHandler):
    """A stand-in for a private registry (the distribution API's ping and manifest routes):
    it wants Basic credentials, records what it got, and holds no images."""

    seen: list[str] = []

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        if auth:
            RegistryStandin.seen.append(auth)
        if not auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="standin"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}'
        self.send_response(200 if self.path == "/v2/" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[type[RegistryStandin]]:
    host, port = REGISTRY_STANDIN.split(":")
    try:
        server = ThreadingHTTPServer((host, int(port)), RegistryStandin)
    except OSError as exc:
        pytest.skip(f"the registry stand-in's port is taken: {exc}")
    RegistryStandin.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RegistryStandin
    finally:
        server.shutdown()
        server.server_close()


def test_image_pull_secrets_are_stored_sealed_and_used_for_pulls(
    container_control: ControlPlane,
    container_cli: CloudCLI,
    docker_client: docker.DockerClient,
    registry: type[RegistryStandin],
) -> None:
    cli, control = container_cli, container_control
    cli.run(
        "secrets", "image-pull-secret", "regcred", REGISTRY_STANDIN, "robot:pull-t0ken", "--skip"
    )
    listed = cli.run("secrets", "list").stdout
    assert "regcred" in listed and "pull-t0ken" not in listed
    with control.client() as c:
        sets = c.get(f"/v1/organizations/{ORG}/secrets").json()["sets"]
        assert {"name": "regcred", "type": "imagePullSecret"}.items() <= next(
            s for s in sets if s["name"] == "regcred"
        ).items()
        assert "pull-t0ken" not in c.get(f"/v1/organizations/{ORG}/secrets/regcred").text
        image = f"{REGISTRY_STANDIN}/team/bot:1"
        body = {"serviceName": "private", "image": image, "imagePullSecretSet": "regcred"}
        refused(c.post(SERVICES, json=body), 400, "PCC_IMAGE_NOT_FOUND")
    expected = "Basic " + base64.b64encode(b"robot:pull-t0ken").decode()
    assert expected in registry.seen
    assert_no_agent(control, "private")
