"""What the store and ``agent status`` say about deployments, across a restart: the control
plane in this process (``create_app``), its local backend replaced by the fake one, so a
deploy's probe starts (or fails to start) an in-memory instance.

A broken redeploy leaves the previous deployment the active one in the store, so a restart
gives the agent its pool back; the failure, with its error, is still shown after it. A
restart onto a backend that can no longer start instances never shows the agent ready.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from cattery.backends.container.engine import EngineUnavailable
from cattery.control.deployer import DEPLOY_FAILED
from cattery.control.state import ControlState
from cattery.store import repositories as repo
from tests.support.control import ORG
from tests.support.fake_backend import FakeBackend
from tests.support.inprocess import bot, fake_control_plane, settled, status_when

AGENTS = "/v1/agents"


async def test_a_broken_redeploy_keeps_the_previous_one_active_across_a_restart(
    tmp_path: Path,
) -> None:
    state_dir, good, broken = tmp_path / "state", bot(tmp_path / "good"), bot(tmp_path / "bad")
    backend = FakeBackend()
    async with fake_control_plane(state_dir, tmp_path, backend) as (client, state):
        resp = await client.post(AGENTS, json={"serviceName": "agent", "image": good})
        assert resp.status_code == 200, resp.text
        first = await status_when(client, "agent", settled, "the first deploy")
        assert first["ready"] and not first["errors"], first
        good_id = first["activeDeploymentId"]

        backend.fail_starts = True  # the new bot dies before it answers
        resp = await client.post(f"{AGENTS}/agent", json={"image": broken})
        assert resp.status_code == 200, resp.text
        assert resp.json()["activeDeploymentId"] == good_id  # it serves meanwhile
        failed = await status_when(client, "agent", settled, "the broken deploy")

        assert failed["errors"][0]["code"] == DEPLOY_FAILED, failed
        assert failed["desiredDeploymentId"] != good_id
        assert failed["activeDeploymentId"] == good_id and failed["available"], failed
        assert not failed["ready"]  # the deploy asked for is not
        pool = state.pools.get(f"{ORG}/agent")
        assert pool is not None and pool.spec.deployment_id == good_id
        error = failed["errors"][0]["message"]
        await client.aclose()

    restarted = FakeBackend()  # the instances of the first control plane are gone with it
    async with fake_control_plane(state_dir, tmp_path, restarted) as (client, state):
        after = await status_when(
            client, "agent", lambda b: b["available"], "the agent's pool back"
        )
        assert not after["ready"]
        assert after["activeDeploymentId"] == good_id
        assert after["errors"] == [{"code": DEPLOY_FAILED, "message": error}], after
        assert after["currentRevision"]["phase"].startswith("Failed"), after
        pool = state.pools.get(f"{ORG}/agent")
        assert pool is not None and pool.spec.deployment_id == good_id
        assert restarted.handles[0].spec.image == good  # the good bot's probe
        await client.aclose()


async def test_a_good_redeploy_becomes_the_active_one_once_ready(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with fake_control_plane(tmp_path / "state", tmp_path, backend) as (client, state):
        await client.post(AGENTS, json={"serviceName": "agent", "image": bot(tmp_path / "v1")})
        first = await status_when(client, "agent", settled, "the first deploy")
        backend.auto_ready = False  # the new deployment's probe waits
        resp = await client.post(f"{AGENTS}/agent", json={"image": bot(tmp_path / "v2")})
        assert resp.status_code == 200, resp.text
        pending = resp.json()
        assert pending["activeDeploymentId"] == first["activeDeploymentId"]
        assert pending["desiredDeploymentId"] != first["activeDeploymentId"]
        assert await start_target(state) == first["activeDeploymentId"]  # starts: the old one

        backend.open_gates()
        second = await status_when(
            client,
            "agent",
            lambda b: settled(b) and b["activeDeploymentId"] != first["activeDeploymentId"],
            "the second deploy to serve",
        )
        assert second["ready"] and not second["errors"]
        assert second["activeDeploymentId"] == pending["desiredDeploymentId"]
        assert await start_target(state) == second["activeDeploymentId"]  # not a cached one
        await client.aclose()


async def start_target(state: ControlState) -> str | None:
    """The deployment a start of the agent is recorded with (the cached lookup)."""
    async with state.sessionmaker() as db:
        org = await repo.get_organization_by_name(db, ORG)
        assert org is not None
    return (await state.lookups.agent(state.sessionmaker, org, "agent")).deployment_id


async def test_a_restart_onto_a_backend_that_cannot_start_instances_is_not_ready(
    tmp_path: Path,
) -> None:
    state_dir, folder = tmp_path / "state", bot(tmp_path / "good")
    async with fake_control_plane(state_dir, tmp_path, FakeBackend()) as (client, _):
        await client.post(AGENTS, json={"serviceName": "agent", "image": folder})
        assert (await status_when(client, "agent", settled, "the deploy"))["ready"]
        await client.aclose()

    broken = FakeBackend()
    broken.fail_starts = True  # e.g. a container engine that no longer starts containers
    async with fake_control_plane(state_dir, tmp_path, broken) as (client, state):
        after = await status_when(client, "agent", lambda b: b["errors"], "the failed activation")
        assert not after["ready"] and not after["available"], after
        assert after["errors"][0]["code"] == DEPLOY_FAILED
        assert state.pools.get(f"{ORG}/agent") is None
        await client.aclose()


async def start(client: httpx.AsyncClient, name: str) -> httpx.Response:
    resp = await client.post(
        f"/v1/organizations/{ORG}/apiKeys", json={"name": "app", "type": "public"}
    )
    assert resp.status_code == 200, resp.text
    key = resp.json()["key"]
    return await client.post(
        f"/v1/public/{name}/start",
        json={"createDailyRoom": False},
        headers={"Authorization": f"Bearer {key}"},
    )


def shows_no_insides(body: dict, *secrets: str) -> None:
    assert set(body) == {"code", "error"}, body
    for secret in (*secrets, "inst_", "Error(", "Traceback", "/"):
        assert secret not in body["error"], body


async def test_a_failed_start_answers_its_kind_and_records_the_session(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with fake_control_plane(tmp_path / "state", tmp_path, backend) as (client, state):
        await client.post(AGENTS, json={"serviceName": "agent", "image": bot(tmp_path / "v1")})
        assert (await status_when(client, "agent", settled, "the deploy"))["ready"]

        backend.fail_starts = True  # the instance dies before it answers
        resp = await start(client, "agent")

        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["code"] == "PCC-AGENT-START-FAILED"
        shows_no_insides(body)
        async with state.sessionmaker() as db:
            org = await repo.get_organization_by_name(db, ORG)
            assert org is not None
            sessions = await repo.list_organization_sessions(db, org.id)
        assert [s.end_state for s in sessions] == ["agent_error"]
        await client.aclose()


async def test_a_backend_s_refusal_keeps_its_insides_to_the_log(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with fake_control_plane(tmp_path / "state", tmp_path, backend) as (client, _):
        await client.post(AGENTS, json={"serviceName": "agent", "image": bot(tmp_path / "v1")})
        assert (await status_when(client, "agent", settled, "the deploy"))["ready"]

        backend.spawn_error = EngineUnavailable(
            "Container engine at unix:///run/engine.sock: ConnectionRefusedError(111)"
        )
        resp = await start(client, "agent")

        assert resp.status_code == 503, resp.text
        assert resp.json()["code"] == EngineUnavailable.code
        shows_no_insides(resp.json(), "engine.sock", "Refused")
        await client.aclose()
