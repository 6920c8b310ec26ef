from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.control import CloudCLI, ControlPlane, control_plane_process


@pytest.fixture
def control_env(database_backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that picks the control plane's database; tests run once per backend.

    SQLite: nothing, so ``cattery serve`` uses its default file in the state dir. PostgreSQL:
    ``CATTERY_DATABASE_URL`` of a fresh database (skipped when there is no server). Tests that
    start more control planes on the same state give them this too.
    """
    if database_backend == "postgresql":
        return {"CATTERY_DATABASE_URL": request.getfixturevalue("postgres_database")}
    return {}


@pytest.fixture
def control(tmp_path: Path, control_env: dict[str, str]) -> Iterator[ControlPlane]:
    proc = control_plane_process(tmp_path / "state", tmp_path / "serve.log", **control_env).start()
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
