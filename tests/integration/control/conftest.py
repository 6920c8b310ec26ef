from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control import CloudCLI, ControlPlane, control_plane_process


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    proc = control_plane_process(tmp_path / "state", tmp_path / "serve.log").start()
    try:
        proc.wait_ready("/healthz", timeout=60)
        yield ControlPlane(proc, tmp_path / "state")
    finally:
        proc.stop()


@pytest.fixture
def cli(control: ControlPlane, tmp_path: Path) -> CloudCLI:
    home = tmp_path / "home"
    home.mkdir()
    return CloudCLI(control, home)
