"""A control plane on SQLite per test: the findings here don't depend on the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.control.helpers import running_control
from tests.support.control import ControlPlane


@pytest.fixture
def control(tmp_path: Path) -> Iterator[ControlPlane]:
    with running_control(tmp_path) as control:
        yield control
