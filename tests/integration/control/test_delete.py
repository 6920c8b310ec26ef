"""Deleting an agent leaves nothing of it running: its instances and its forking parent."""

from __future__ import annotations

import shutil
from pathlib import Path

import psutil

from tests.support.control import CloudCLI, ControlPlane
from tests.support.processes import TEST_BOTS, processes_where
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"


def _processes_of(folder: Path) -> list[psutil.Process]:
    """Processes working in ``folder``: the forking parent, its children (forked from a
    shared parent, none of them names the folder on its command line)."""
    return processes_where(lambda proc: proc.cwd() == str(folder))


def test_delete_stops_parent(cli: CloudCLI, control: ControlPlane, tmp_path: Path) -> None:
    folder = tmp_path / "doomed"  # its own path: only this agent's processes name it
    shutil.copytree(PROBE, folder)
    cli.run("deploy", "doomed", f"{folder}:latest", "--min-agents", "1", "--yes")
    wait_for(lambda: len(_processes_of(folder)) >= 2, what="a forking parent and its child")

    cli.run("agent", "delete", "doomed", "--force")

    wait_for(lambda: not _processes_of(folder), timeout=5, what="no process of the agent")
