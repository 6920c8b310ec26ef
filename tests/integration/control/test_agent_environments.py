"""Agent folders deploy as their Dockerfiles would install them, on ``cattery serve`` as the
README's first command starts it: no settings at all (its state in ``./.cattery``, relative).

Packages come from a stand-in package index on loopback (``tests/support/packages.py``)
that uv reaches through its standard setting, ``UV_DEFAULT_INDEX``.

- ``requirements.txt`` naming a package cattery doesn't ship: ``bot()`` imports it.
- ``pyproject.toml`` + ``uv.lock`` + two modules: deploys (dependencies only) and runs; a
  second deploy of the same lock reuses the venv (both times printed).
- A bot that starts a thread at import: ``agent status`` and ``agent logs`` say its
  instances are plain processes, and why; so does the deployment record.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.control.helpers import logs, start_session, wait_ended
from tests.support.control import ORG, CloudCLI, ControlPlane
from tests.support.packages import SimpleIndex
from tests.support.processes import AGENT_ROOTS, CATTERY, ServerProcess
from tests.support.waiting import wait_for

PACKAGE, MODULE = "cattery-test-greeting", "cattery_test_greeting"
REPORTING_BOT = f"""
import json, sys
from pathlib import Path
import {MODULE}
{{extra_import}}

async def bot(runner_args):
    Path(runner_args.body["report_to"]).write_text(json.dumps({{
        "word": {MODULE}.WORD,
        "module_file": {MODULE}.__file__,
        "python": sys.executable,
        {{extra_field}}
    }}))
"""
THREAD_AT_IMPORT = """
import threading
threading.Thread(target=threading.Event().wait, name="exporter-at-import", daemon=True).start()

async def bot(runner_args):
    pass
"""


def write_bot(folder: Path, extra_import: str = "", extra_field: str = "") -> None:
    folder.mkdir(parents=True)
    source = REPORTING_BOT.replace("{extra_import}", extra_import)
    (folder / "bot.py").write_text(source.replace("{extra_field}", extra_field))


def no_settings_server(cwd: Path, index: SimpleIndex) -> ControlPlane:
    """``cattery serve`` with no ``CATTERY_*`` but the agent roots the tests' folders are in,
    run from ``cwd``; the admin token is the one it prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CATTERY_", "PIPECAT_"))}
    env.update(
        PYTHONUNBUFFERED="1", CATTERY_AGENT_ROOTS=AGENT_ROOTS, **index.uv_env(cwd / "uv-cache")
    )
    proc = ServerProcess([*CATTERY, "serve"], cwd / "serve.log", env=env, cwd=cwd).start()
    proc.wait_ready("/healthz", timeout=60)
    found = wait_for(
        lambda: re.search(r"PIPECAT_TOKEN=(\S+)", proc.logs()), what="the printed admin token"
    )
    return ControlPlane(proc, cwd / ".cattery", admin_token=found.group(1))


def deploy_timed(control: ControlPlane, name: str, folder: Path) -> float:
    """Deploy and wait until ready; the seconds it took."""
    t0 = time.monotonic()
    control.deploy(name, folder)
    return time.monotonic() - t0


def run_report(control: ControlPlane, key: str, agent: str, out: Path) -> dict:
    session_id = start_session(control, key, agent, {"report_to": str(out)})
    assert wait_ended(control, agent, session_id, timeout=60)["endState"] == "completed"
    return json.loads(out.read_text())


@pytest.fixture
def index(tmp_path: Path):
    index = SimpleIndex(tmp_path / "index")
    index.add(PACKAGE, "1.0", {f"{MODULE}/__init__.py": "WORD = 'hello from the index'\n"})
    try:
        yield index
    finally:
        index.close()


def test_agent_folders_get_their_own_dependencies(tmp_path: Path, index: SimpleIndex) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    control = no_settings_server(cwd, index)
    try:
        key = control.public_key()
        envs = cwd / ".cattery" / "envs"

        # requirements.txt, with the default (relative) state dir
        reqs = tmp_path / "reqs"
        write_bot(reqs)
        (reqs / "requirements.txt").write_text(f"{PACKAGE}==1.0\n")
        control.deploy("reqs", reqs)
        got = run_report(control, key, "reqs", tmp_path / "reqs.json")
        assert got["word"] == "hello from the index"
        assert Path(got["python"]).is_relative_to(envs.resolve()), got

        # pyproject.toml + uv.lock + two modules: dependencies only, from the lock
        project = tmp_path / "project"
        write_bot(project, "import helper", '"helper": helper.NAME,')
        (project / "helper.py").write_text("NAME = 'the second module'\n")
        (project / "pyproject.toml").write_text(
            '[project]\nname = "two-modules"\nversion = "0.1.0"\n'
            f'requires-python = ">=3.11"\ndependencies = ["{PACKAGE}"]\n'
        )
        uv_env = {**os.environ, **index.uv_env(cwd / "uv-cache")}
        subprocess.run(
            [sys.executable, "-m", "uv", "lock", "--quiet"], cwd=project, env=uv_env, check=True
        )
        first = deploy_timed(control, "project", project)
        got = run_report(control, key, "project", tmp_path / "project.json")
        assert got["word"] == "hello from the index" and got["helper"] == "the second module"
        second = deploy_timed(control, "project-again", project)
        again = run_report(control, key, "project-again", tmp_path / "again.json")
        assert again["python"] == got["python"]  # the same venv
        lines = [entry["log"] for entry in logs(control, "project-again")]
        assert any("Reusing the environment built from uv.lock" in line for line in lines), lines
        took = [
            re.findall(r"Environment took ([\d.]+ s)", entry["log"])
            for agent in ("project", "project-again")
            for entry in logs(control, agent)
        ]
        print(
            f"\nuv.lock deploy until ready: first {first:.2f} s, same lock again {second:.2f} s"
            f"; the environment itself: {[t for found in took for t in found]}"
        )
        assert not (project / ".venv").exists()  # nothing written into the user's folder

        # a bot that starts a thread at import: plain processes, said with the reason
        threaded = tmp_path / "threaded"
        threaded.mkdir()
        (threaded / "bot.py").write_text(THREAD_AT_IMPORT)
        control.deploy("threaded", threaded)
        cli = CloudCLI(control, tmp_path / "home")
        cli.home.mkdir()
        status = cli.run("agent", "status", "threaded").stdout
        assert "plain processes" in status and "exporter-at-import" in status, status
        shown = cli.run("agent", "logs", "threaded").stdout
        said = [line for line in shown.splitlines() if "plain processes" in line]
        assert said and "exporter-at-import" in said[0], shown
        with control.client() as c:
            deployments = c.get(f"/v1/organizations/{ORG}/services/threaded/deployments").json()
        reason = deployments["deployments"][0]["plainProcessesReason"]
        assert reason and "exporter-at-import" in reason, deployments
    finally:
        control.process.stop()
