"""Deleting an agent leaves nothing of it running: its instances and its forking parent."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil

from tests.support.control import CloudCLI, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"


def _processes_of(folder: Path) -> list[psutil.Process]:
    """Processes whose command line names ``folder``: the forking parent, its children."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(str(folder) in part for part in cmdline):
            found.append(proc)
    return found


def test_delete_stops_parent(cli: CloudCLI, control: ControlPlane, tmp_path: Path) -> None:
    folder = tmp_path / "doomed"  # its own path: only this agent's processes name it
    shutil.copytree(PROBE, folder)
    cli.run("deploy", "doomed", f"{folder}:latest", "--min-agents", "1", "--yes")
    wait_for(lambda: len(_processes_of(folder)) >= 2, what="a forking parent and its child")

    cli.run("agent", "delete", "doomed", "--force")

    wait_for(lambda: not _processes_of(folder), timeout=5, what="no process of the agent")
