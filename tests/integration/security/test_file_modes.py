"""The state dir is its owner's alone: the folder 0700, the database and instances' logs 0600,
whatever the umask, and an older state dir left open is tightened at start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.support.control import ORG
from tests.support.inprocess import app_client
from tests.support.processes import TEST_BOTS
from tests.support.waiting import async_wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_state_dir_database_and_logs_are_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)
    (state / "cattery.db").touch(mode=0o644)
    old = os.umask(0o022)
    try:
        async with app_client(state) as api:
            body = {
                "serviceName": "probe",
                "image": f"{TEST_BOTS / 'probe'}:latest",
                "autoScaling": {"minAgents": 1},
            }
            assert (
                await api.post(f"/v1/organizations/{ORG}/services", json=body)
            ).status_code == 200

            async def idle() -> bool:
                resp = await api.get(f"/v1/organizations/{ORG}/services/probe")
                return resp.json()["body"]["pool"]["idle"] == 1

            await async_wait_for(idle, timeout=60, what="a warm instance")
            assert mode(state) == 0o700
            for name in ("cattery.db", "cattery.db-wal", "cattery.db-shm", "secret.key"):
                if (state / name).exists():
                    assert mode(state / name) == 0o600, name
            logs = list((state / "instances").glob("*.log"))
            assert logs
            assert mode(state / "instances") == 0o700
            assert {mode(log) for log in logs} == {0o600}
    finally:
        os.umask(old)
