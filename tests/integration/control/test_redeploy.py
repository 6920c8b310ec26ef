"""A redeploy during a call: the call finishes on the old deployment, the next start gets
the new one, and no warm instance of the old deployment is left."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from cattery.store import repositories as repo
from cattery.store.db import create_engine, sessionmaker
from tests.integration.control.helpers import (
    database_url,
    put_secrets,
    start_session,
    wait_ended,
    wait_pool,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"


def live_instance_deployments(control: ControlPlane) -> list[str]:
    async def read() -> list[str]:
        engine = create_engine(database_url(control))
        try:
            async with sessionmaker(engine)() as db:
                return [row.deployment_id for row in await repo.list_live_instances(db)]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def report(path: Path) -> dict:
    return json.loads(wait_for(lambda: path.exists() and path.read_text(), what=str(path)))


def deploy(control: ControlPlane) -> str:
    body = {
        "serviceName": "roll",
        "image": f"{PROBE}:latest",
        "secretSet": "roll-secrets",
        "autoScaling": {"minAgents": 1, "maxAgents": 3},
        "forceRedeploy": True,
    }
    with control.client() as c:
        resp = c.post(f"/v1/organizations/{ORG}/services", json=body)
    assert resp.status_code == 200, resp.text
    return control.wait_ready("roll")["activeDeploymentId"]


def test_a_redeploy_rolls_the_warm_pool_and_lets_calls_finish(
    control: ControlPlane, tmp_path: Path
) -> None:
    put_secrets(control, "roll-secrets", PROBE_SECRET="old")
    old = deploy(control)
    wait_pool(control, "roll", idle=1, busy=0)
    key = control.public_key()

    gate = tmp_path / "hang-up"
    call = start_session(
        control,
        key,
        "roll",
        {"action": "until", "path": str(gate), "report_to": str(tmp_path / "call.json")},
    )
    assert report(tmp_path / "call.json")["env"] == {"PROBE_SECRET": "old"}

    put_secrets(control, "roll-secrets", PROBE_SECRET="new")
    new = deploy(control)
    assert new != old
    wait_pool(control, "roll", idle=1, busy=1)
    wait_for(
        lambda: live_instance_deployments(control).count(old) == 1,
        what="only the call's instance left of the old deployment",
    )

    start_session(control, key, "roll", {"report_to": str(tmp_path / "next.json")})
    assert report(tmp_path / "next.json")["env"] == {"PROBE_SECRET": "new"}

    gate.touch()
    ended = wait_ended(control, "roll", call)
    assert ended["endState"] == "completed" and ended["deploymentId"] == old
    wait_for(
        lambda: old not in live_instance_deployments(control),
        what="no instance of the old deployment",
    )
    assert set(live_instance_deployments(control)) == {new}
