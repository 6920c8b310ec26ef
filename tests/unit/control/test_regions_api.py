"""Regions through Pipecat Cloud's routes (the official CLI's payloads), and the enroll
token a new machine trades for the cluster's join details, on the control plane
in-process (no deploy here reaches a backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cattery.contract import CLUSTER_JOIN_PATH as JOIN_PATH
from cattery.store import hash_key
from cattery.store import repositories as repo
from cattery.store.types import utcnow
from tests.support.control import ORG, refused
from tests.support.inprocess import admin_client, running_app, settings_for

REGIONS = f"/v1/organizations/{ORG}/regions"
SERVICES = f"/v1/organizations/{ORG}/services"
RAY_TOKEN = "ray-token-for-tests-only"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = settings_for(
        tmp_path / "state",
        regions=["local", "eu-lab"],
        architectures=["amd64"],
        ray={"join_address": "127.0.0.2:6379", "auth_token": RAY_TOKEN},
    )
    async with running_app(settings) as app:
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with admin_client(app) as c:
        yield c


async def test_settings_seed_the_list(client: httpx.AsyncClient) -> None:
    listed = (await client.get(REGIONS)).json()["regions"]
    assert [r["code"] for r in listed] == ["local", "eu-lab"]
    assert listed[0] == {
        "code": "local",
        "display_name": "local",
        "supported_architectures": ["amd64"],
        "default_architecture": "amd64",
    }
    assert (await client.get("/v1/regions")).json()["regions"] == listed
    shown = (await client.get(f"{REGIONS}/local")).json()
    assert shown["region_key"] == "local" and shown["enrollment_status"] == "enrolled"
    refused(await client.get(f"{REGIONS}/mars"), 404)


async def test_register_is_an_upsert_keeping_omitted_fields(client: httpx.AsyncClient) -> None:
    body = {"regionKey": "pce-us-lab", "displayName": "US lab", "supportedArchitectures": ["amd64"]}
    made = (await client.post(REGIONS, json=body)).json()
    assert made["region_key"] == "pce-us-lab" and made["display_name"] == "US lab"
    assert made["enrollment_status"] == "pending"
    again = await client.post(
        REGIONS, json={"regionKey": "pce-us-lab", "wsPublicEndpoint": "wss://us.lab.test"}
    )
    assert again.json()["display_name"] == "US lab"
    assert again.json()["ws_public_endpoint"] == "wss://us.lab.test"
    assert "pce-us-lab" in [r["code"] for r in (await client.get(REGIONS)).json()["regions"]]

    refused(await client.post(REGIONS, json={"regionKey": "Bad_Key"}), 400)
    refused(
        await client.post(REGIONS, json={"regionKey": "x", "supportedArchitectures": ["z"]}), 400
    )
    refused(
        await client.post(REGIONS, json={"regionKey": "x", "wsPublicEndpoint": "http://x"}), 400
    )
    refused(await client.post(REGIONS, json={}), 400)


async def test_only_the_admin_token_changes_regions(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    state = app.state.control
    async with state.sessionmaker() as db:
        org = await repo.get_organization_by_name(db, ORG)
        _, private = await repo.create_api_key(db, org.id, "private", "ci")
        await db.commit()
    headers = {"Authorization": f"Bearer {private}"}
    assert (await client.get(REGIONS, headers=headers)).status_code == 200
    refused(await client.post(REGIONS, json={"regionKey": "x"}, headers=headers), 403)
    refused(await client.delete(f"{REGIONS}/eu-lab", headers=headers), 403)
    refused(await client.post(f"{REGIONS}/eu-lab/enrollment-tokens", headers=headers), 403)


async def test_delete_is_refused_while_an_agent_or_session_is_there(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    await client.post(REGIONS, json={"regionKey": "pce-busy"})
    state = app.state.control
    async with state.sessionmaker() as db:
        org = await repo.get_organization_by_name(db, ORG)
        agent = await repo.create_agent(db, org.id, "busy-bot", "pce-busy")
        dep = await repo.create_deployment(
            db, agent.id, image="x", region="pce-busy", min_agents=0, max_agents=1
        )
        session = await repo.create_session(
            db, organization_id=org.id, agent_id=agent.id, deployment_id=dep.id
        )
        await db.commit()
    body = refused(await client.delete(f"{REGIONS}/pce-busy"), 409, "REGION_IN_USE")
    assert "1 agent(s)" in body["error"]
    async with state.sessionmaker() as db:
        await repo.soft_delete_agent(db, await repo.get_agent_by_id(db, agent.id))
        await db.commit()
    body = refused(await client.delete(f"{REGIONS}/pce-busy"), 409, "REGION_IN_USE")
    assert "1 live session(s)" in body["error"]
    async with state.sessionmaker() as db:
        await repo.end_session(db, session.id, "completed")
        await db.commit()
    assert (await client.delete(f"{REGIONS}/pce-busy")).json() == {"deleted": "pce-busy"}
    refused(await client.get(f"{REGIONS}/pce-busy"), 404)
    refused(await client.delete(f"{REGIONS}/pce-busy"), 404)
    refused(await client.delete(f"{REGIONS}/local"), 409, "REGION_IN_USE")  # the default


async def test_default_region_and_deploys_take_stored_regions_only(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    await client.post(REGIONS, json={"regionKey": "pce-new"})
    props = f"/v1/organizations/{ORG}/properties"
    assert (await client.patch(props, json={"defaultRegion": "pce-new"})).status_code == 200
    schema = (await client.get(f"{props}/schema")).json()["properties"]["defaultRegion"]
    assert schema["availableValues"] == ["local", "eu-lab", "pce-new"]
    assert schema["currentValue"] == "pce-new"
    refused(await client.patch(props, json={"defaultRegion": "mars"}), 400, "INVALID_REGION")
    # deleting the organization's default region puts it back on the platform's
    assert (await client.delete(f"{REGIONS}/pce-new")).status_code == 200
    assert (await client.get(props)).json()["properties"]["defaultRegion"] == "local"

    folder = tmp_path / "bot"
    folder.mkdir()
    (folder / "bot.py").write_text("async def bot(runner_args):\n    pass\n")
    deploy = {"serviceName": "bot", "image": f"{folder}:latest", "region": "mars"}
    refused(await client.post(SERVICES, json=deploy), 400, "INVALID_REGION")
    assert (await client.get(f"{SERVICES}/bot")).status_code == 404
    refused(
        await client.post(f"/v1/organizations/{ORG}/builds/upload-url", json={"region": "mars"}),
        400,
        "INVALID_REGION",
    )


async def test_an_enroll_token_is_traded_once_for_the_join_details(
    client: httpx.AsyncClient,
) -> None:
    minted = (await client.post(f"{REGIONS}/eu-lab/enrollment-tokens", json={})).json()
    assert minted["region"] == "eu-lab" and minted["token"].startswith("cattery_enroll_")
    refused(await client.post(f"{REGIONS}/mars/enrollment-tokens", json={}), 404)

    anonymous = {"Authorization": ""}
    joined = await client.post(JOIN_PATH, json={"token": minted["token"]}, headers=anonymous)
    assert joined.status_code == 200, joined.text
    assert joined.json() == {
        "rayAddress": "127.0.0.2:6379",
        "rayAuthToken": RAY_TOKEN,
        "region": "eu-lab",
        "labels": {"cattery-region": "eu-lab"},
    }
    again = await client.post(JOIN_PATH, json={"token": minted["token"]}, headers=anonymous)
    refused(again, 401, "ENROLL_TOKEN_INVALID")
    refused(await client.post(JOIN_PATH, json={"token": "cattery_enroll_made-up"}), 401)
    refused(await client.post(JOIN_PATH, json={}), 400)


async def test_an_expired_enroll_token_is_refused(app: FastAPI, client: httpx.AsyncClient) -> None:
    async with app.state.control.sessionmaker() as db:
        past = utcnow() - timedelta(seconds=1)
        await repo.create_enroll_token(db, "eu-lab", hash_key("cattery_enroll_old"), past)
        await db.commit()
    refused(await client.post(JOIN_PATH, json={"token": "cattery_enroll_old"}), 401)


async def test_without_a_cluster_a_token_is_not_spent(tmp_path: Path) -> None:
    async with running_app(settings_for(tmp_path / "state")) as app, admin_client(app) as client:
        token = (await client.post(f"{REGIONS}/local/enrollment-tokens")).json()["token"]
        refused(await client.post(JOIN_PATH, json={"token": token}), 409, "NO_CLUSTER")
        async with app.state.control.sessionmaker() as db:
            assert await repo.use_enroll_token(db, hash_key(token)) == "local"
