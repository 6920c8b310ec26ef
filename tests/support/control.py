"""A real `cattery serve` for tests, and the official `pipecat cloud` CLI pointed at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.processes import CATTERY, REPO, ServerProcess, base_env

ADMIN_TOKEN = "sk_test_admin_token_for_cattery_tests"
ORG = "default"


def refused(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    """A refusal: ``status``, and a body of exactly ``{"code", "error"}`` (both strings)."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    body = resp.json()
    assert set(body) == {"code", "error"}, body
    assert isinstance(body["code"], str) and isinstance(body["error"], str), body
    assert body["error"], body
    if code is not None:
        assert body["code"] == code, body
    return body


@dataclass
class ControlPlane:
    process: ServerProcess
    state_dir: Path
    admin_token: str = ADMIN_TOKEN

    @property
    def url(self) -> str:
        return self.process.url

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=60,
        )

    def public_key(self) -> str:
        with self.client() as c:
            resp = c.post(
                f"/v1/organizations/{ORG}/apiKeys", json={"name": "test", "type": "public"}
            )
            resp.raise_for_status()
            return resp.json()["key"]

    def deploy(self, name: str, image: Path | str, **spec: object) -> dict:
        body = {"serviceName": name, "image": f"{image}:latest", **spec}
        with self.client() as c:
            resp = c.post(f"/v1/organizations/{ORG}/services", json=body)
            assert resp.status_code == 200, resp.text
        self.wait_ready(name)
        return resp.json()

    def wait_ready(self, name: str) -> dict:
        from tests.support.waiting import wait_for

        def ready() -> dict | None:
            with self.client() as c:
                body = c.get(f"/v1/organizations/{ORG}/services/{name}").json()["body"]
            assert not body["errors"], body["errors"]
            return body if body["ready"] else None

        return wait_for(ready, timeout=60, what=f"agent {name} ready")


def control_plane_process(state_dir: Path, log_path: Path, **env: str) -> ServerProcess:
    state_dir.mkdir(parents=True, exist_ok=True)
    full_env = base_env(
        CATTERY_STATE_DIR=str(state_dir),
        CATTERY_ADMIN_TOKEN=ADMIN_TOKEN,
        CATTERY_INSTANCE_SAMPLE_INTERVAL="0.5",
        **env,
    )
    return ServerProcess([*CATTERY, "serve"], log_path, env=full_env)


@dataclass
class CloudCLI:
    """Runs `pipecat cloud ...` as a user would, configured by env and its TOML file."""

    control: ControlPlane
    home: Path

    def env(self) -> dict[str, str]:
        config = self.home / "pipecatcloud.toml"
        config.write_text(f'token = "{self.control.admin_token}"\norg = "{ORG}"\n')
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPECAT_", "CATTERY_"))}
        env.update(
            PIPECAT_API_HOST=self.control.url,
            PIPECAT_CONFIG_PATH=str(config),
            HOME=str(self.home),
            NO_COLOR="1",
            COLUMNS="200",
        )
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        cwd: Path | None = None,
        debug: bool = False,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess[str]:
        """``debug``: the CLI logs each failed response's status on stderr."""
        pipecat = Path(sys.executable).with_name("pipecat")
        done = subprocess.run(
            [str(pipecat), "cloud", *args],
            capture_output=True,
            text=True,
            env={**self.env(), **({"PIPECAT_CLI_LOG_LEVEL": "DEBUG"} if debug else {})},
            cwd=cwd or REPO,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert done.returncode == 0, (
                f"pipecat cloud {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
            )
        return done

    def json(self, *args: str) -> object:
        done = self.run("--output", "json", *args)
        return json.loads(done.stdout)
