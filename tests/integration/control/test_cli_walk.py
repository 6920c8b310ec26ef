"""Every leaf command of the installed `pipecat cloud` CLI, from its own Typer app, against
`cattery serve`: each works, or cattery answers it with a code and a sentence (never a
404, 405 or 500 for a route it lacks)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest
import typer.main
from pipecatcloud.cli.entry_point import entrypoint_cli_typer

from tests.integration.control.helpers import running_control
from tests.support.control import ORG, CloudCLI, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"
BAD_STATUSES = {"404", "405", "500"}
#: commands whose first request asks whether the thing they create exists yet: that 404
#: ("Secret set 'x' not found") is their normal path, not a missing route
ASKS_FIRST = {"secrets set", "secrets image-pull-secret"}
RESPONSE_NOT_OK = re.compile(r"Response not ok: (\d{3})")


def leaf_commands() -> list[str]:
    def walk(command, path: list[str]):  # type: ignore[no-untyped-def]
        children = getattr(command, "commands", None)
        if not children:
            yield " ".join(path)
            return
        for name, child in children.items():
            yield from walk(child, [*path, name])

    return list(walk(typer.main.get_command(entrypoint_cli_typer), []))


def make_build(control: ControlPlane) -> str:
    """A successful build, made through the API as the CLI's deploy makes one."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in (
            ("Dockerfile", b"FROM dailyco/pipecat-base:latest\nCOPY ./bot.py bot.py\n"),
            ("bot.py", (PROBE / "bot.py").read_bytes()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with control.client() as c:
        granted = c.post(f"/v1/organizations/{ORG}/builds/upload-url", json={}).json()
        uploaded = httpx.post(
            granted["uploadUrl"],
            data=granted["uploadFields"],
            files={"file": ("context.tar.gz", raw.getvalue(), "application/gzip")},
        )
        assert uploaded.status_code == 204, uploaded.text
        build = c.post(f"/v1/organizations/{ORG}/builds", json={"uploadId": granted["uploadId"]})
        build_id = build.json()["build"]["id"]

        def done() -> bool:
            status = c.get(f"/v1/organizations/{ORG}/builds/{build_id}").json()["build"]["status"]
            assert status in ("pending", "building", "success"), status
            return status == "success"

        wait_for(done, timeout=60, what="the build")
    return build_id


def arguments(build_id: str, public_key: str, session_id: str) -> dict[str, list[str]]:
    """What each leaf command is run with, in the order they run (deletions last)."""
    return {
        "deploy": ["walk-bot", f"{PROBE}:latest", "--yes"],
        "docker build-push": ["walk-bot", "--no-push", "--yes"],
        "auth login": [],
        "auth use-pat": [],
        "auth whoami": [],
        "build logs": [build_id],
        "build status": [build_id],
        "build list": [],
        "github connect": [],
        "github status": [],
        "github disconnect": ["--yes"],
        "github repos": [],
        "github branches": ["someone/some-repo"],
        "organizations select": ["-o", ORG],
        "organizations list": [],
        "organizations default-region": ["local"],
        "organizations keys list": [],
        "organizations keys create": ["--name", "walk"],
        "organizations keys revoke": [],
        "organizations keys use": [],
        "organizations registry-keys mint": ["--name", "walk"],
        "organizations registry-keys list": [],
        "organizations registry-keys revoke": ["rk_walk"],
        "organizations properties list": [],
        "organizations properties schema": [],
        "organizations properties set": ["defaultRegion", "local"],
        "regions list": [],
        "regions register": ["lab-2"],
        "regions show": ["local"],
        "regions delete": ["local", "--yes"],
        "regions enroll-token": ["local"],
        "secrets set": ["walk-secrets", "WALK=1", "--skip"],
        "secrets unset": ["walk-secrets", "WALK", "--skip"],
        "secrets list": [],
        "secrets image-pull-secret": ["walk-pull", "registry.test", "user:pass", "--skip"],
        "secrets reference": ["walk-ref", "--region", "local"],
        "spend-limit show": [],
        "spend-limit set": ["100", "--yes"],
        "spend-limit clear": ["--yes"],
        "agent list": [],
        "agent status": ["walk-bot"],
        "agent sessions": ["walk-bot"],
        "agent scale": [],
        "agent logs": ["walk-bot"],
        "agent deployments": ["walk-bot"],
        "agent start": ["walk-bot", "-k", public_key, "-f"],
        "agent stop": ["walk-bot", "-s", session_id, "-f"],
        "agent link": ["walk-bot", "--repo", "someone/some-repo", "--branch", "main"],
        "agent unlink": ["walk-bot", "--force"],
        "agent deploy": ["walk-bot", "--github"],
        "agent profiles list": [],
        "agent profiles create": ["walk-small", "--cpu", "500m", "--memory", "256Mi"],
        "agent profiles update": ["walk-small", "--display-name", "Walk small"],
        "agent profiles disable": ["walk-small"],
        "agent profiles enable": ["walk-small"],
        "secrets delete": ["walk-secrets", "--skip"],
        "agent delete": ["walk-bot", "--force"],
        "auth logout": [],
    }


@pytest.mark.timeout(1200)
def test_every_cli_command_works_or_gets_a_coded_answer(tmp_path: Path) -> None:
    """One database only: this walks the CLI, not the store (about 60 CLI runs)."""
    (tmp_path / "home").mkdir()
    with running_control(tmp_path) as control:
        walk(CloudCLI(control, tmp_path / "home"), control, tmp_path)


def walk(cli: CloudCLI, control: ControlPlane, tmp_path: Path) -> None:
    control.deploy("walk-bot", PROBE, autoScaling={"minAgents": 0, "maxAgents": 2})
    public_key = control.public_key()
    with control.client(public_key) as c:
        session_id = c.post("/v1/public/walk-bot/start", json={}).json()["sessionId"]
    table = arguments(make_build(control), public_key, session_id)
    leaves = leaf_commands()
    assert sorted(table) == sorted(leaves), set(table) ^ set(leaves)

    outcomes: dict[str, str] = {}
    for command, args in table.items():
        try:
            done = cli.run(
                "--output", "json", *command.split(), *args, check=False, debug=True, timeout=60
            )
        except subprocess.TimeoutExpired:
            outcomes[command] = "timed out"
            continue
        statuses = RESPONSE_NOT_OK.findall(done.stderr)
        errors = [
            line["error"]
            for line in map(_json_or_none, done.stdout.splitlines())
            if isinstance(line, dict) and isinstance(line.get("error"), dict)
        ]
        bad = BAD_STATUSES.intersection(statuses)
        if command in ASKS_FIRST and done.returncode == 0:
            bad.discard("404")
            statuses = [s for s in statuses if s != "404"]
        assert not bad, f"{command}: {statuses}\n{done.stdout}\n{done.stderr}"
        for error in errors:
            assert error.get("code") and len(str(error.get("error", "")).split()) >= 3, (
                command,
                error,
            )
        if done.returncode == 0 and not statuses:
            outcomes[command] = "works"
        elif statuses:
            outcomes[command] = f"answered {','.join(statuses)}"
        else:
            outcomes[command] = "stopped by the CLI itself"
    report = "\n".join(f"{outcome:28} {command}" for command, outcome in outcomes.items())
    works = sum(1 for outcome in outcomes.values() if outcome == "works")
    print(f"\n{report}\n{works} of {len(outcomes)} commands work")
    (tmp_path / "walk.txt").write_text(report)
    assert "timed out" not in outcomes.values(), report
    assert works >= 35, report


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None
