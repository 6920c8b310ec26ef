"""A new user's first minutes with the commands: a taken port, a lost admin token, --version.

Processes, because what is shown is what the commands print and leave behind.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.integration.control.helpers import running_control
from tests.support.processes import CATTERY, EXAMPLES, base_env, bind_loopback

ORG = "default"


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CATTERY, *args],
        cwd=cwd,
        env=base_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_taken_port_stops_serve_and_dev_before_anything_is_made_or_printed(
    tmp_path: Path,
) -> None:
    with bind_loopback() as taken:
        port = str(taken.getsockname()[1])
        holder = f"in use by PID {os.getpid()}"
        state = tmp_path / "state"
        served = run("serve", "--port", port, cwd=tmp_path, CATTERY_STATE_DIR=str(state))
        dev = run("dev", str(EXAMPLES / "multi-transport"), "--port", port, cwd=tmp_path)
    for done, command in ((served, "cattery serve"), (dev, "cattery dev")):
        assert done.returncode != 0
        assert done.stdout == "", done.stdout  # no banner, no admin token
        assert f"{command}: error: 127.0.0.1:{port} is already {holder}" in done.stderr
        assert "Traceback" not in done.stderr
    assert not state.exists() and not (tmp_path / ".cattery-dev").exists()


def test_a_lost_admin_token_is_replaced_by_one_in_the_pat_form_the_api_takes(
    tmp_path: Path,
) -> None:
    env = {"CATTERY_STATE_DIR": str(tmp_path / "state")}
    made = run("token", "create", "--admin", cwd=tmp_path, **env)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    assert token.startswith("pcc_pat_") and len(token) > 40
    assert "shown once" in made.stdout
    again = run("token", "create", "--admin", cwd=tmp_path, **env).stdout.strip()
    assert token not in again  # each one new
    refused = run("token", "create", cwd=tmp_path, **env)
    assert refused.returncode != 0 and "--admin" in refused.stderr
    with running_control(tmp_path) as control:  # the same state folder
        with httpx.Client(base_url=control.url, timeout=30) as c:
            auth = {"Authorization": f"Bearer {token}"}
            assert c.get(f"/v1/organizations/{ORG}/services", headers=auth).status_code == 200
            wrong = {"Authorization": f"Bearer {token}x"}
            assert c.get(f"/v1/organizations/{ORG}/services", headers=wrong).status_code == 401


def test_version_and_where_settings_come_from(tmp_path: Path) -> None:
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("cattery ")
    shown = " ".join(run("serve", "--help", cwd=tmp_path, COLUMNS="200").stdout.split())
    for mention in ("cattery.toml", "current directory", "CATTERY_STATE_DIR", "CATTERY_PORT"):
        assert mention in shown
    assert "CATTERY_POOLS__MAX_AGENTS" in shown and "token create --admin" in shown
