"""`pipecat cloud auth use-pat` with the token `cattery serve` printed, then the CLI with no
PIPECAT_TOKEN: its own config file holds the token from then on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.processes import CATTERY, TEST_BOTS, ServerProcess, base_env
from tests.support.waiting import wait_for

PRINTED = re.compile(r"admin token \(shown once; store it now\): (\S+)")


def pipecat(
    home: Path, url: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPECAT_", "CATTERY_"))}
    env.update(
        PIPECAT_API_HOST=url,
        PIPECAT_CONFIG_PATH=str(home / "pipecatcloud.toml"),
        HOME=str(home),
        NO_COLOR="1",
        COLUMNS="200",
    )
    return subprocess.run(
        [str(Path(sys.executable).with_name("pipecat")), "cloud", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        start_new_session=True,  # no terminal: getpass reads the token from stdin
    )


def test_use_pat_with_the_printed_token_then_no_pipecat_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    env = base_env(CATTERY_STATE_DIR=str(state), CATTERY_REGIONS='["local", "lab"]')
    server = ServerProcess([*CATTERY, "serve"], tmp_path / "serve.log", env=env).start()
    try:
        server.wait_ready("/healthz", timeout=60)
        token = wait_for(
            lambda: (m := PRINTED.search((tmp_path / "serve.log").read_text())) and m.group(1),
            what="the printed admin token",
        )
        assert token.startswith("pcc_pat_")
        home = tmp_path / "home"
        home.mkdir()

        used = pipecat(home, server.url, "auth", "use-pat", stdin=token + "\n")
        assert used.returncode == 0, used.stdout + used.stderr
        assert "Active organization: default" in used.stdout
        assert token in (home / "pipecatcloud.toml").read_text()

        def run(*args: str) -> str:
            done = pipecat(home, server.url, *args)
            assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
            return done.stdout

        assert "admin@localhost" in run("auth", "whoami")
        assert "local" in run("organizations", "default-region")
        run("organizations", "default-region", "lab")
        assert "lab" in run("organizations", "default-region")
        run("deploy", "pat-bot", f"{TEST_BOTS / 'probe'}:latest", "--yes")
        assert "lab" in run("agent", "list")
        assert "pat-bot" in run("agent", "status", "pat-bot")
        run("agent", "delete", "pat-bot", "--force")
    finally:
        server.stop()
