"""Agent profiles, properties and the deploy fields' refusals, on the control plane
in-process (no deploy here reaches a backend)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.control import ORG, refused
from tests.support.inprocess import app_client

PROFILES = f"/v1/organizations/{ORG}/agent-profiles"
SERVICES = f"/v1/organizations/{ORG}/services"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(tmp_path / "state", architectures=["amd64"]) as c:
        yield c


async def profile_names(client: httpx.AsyncClient) -> dict[str, dict]:
    resp = await client.get(PROFILES)
    assert resp.status_code == 200, resp.text
    return {p["api_name"]: p for p in resp.json()["agentProfiles"]}


async def test_profiles_built_in_and_custom(client: httpx.AsyncClient) -> None:
    listed = await profile_names(client)
    assert set(listed) == {"agent-1x", "agent-2x", "agent-3x"}
    assert listed["agent-2x"]["resources"] == {"cpu": "1", "memory": "2Gi"}
    assert not listed["agent-1x"]["custom"]

    body = {
        "apiName": "small",
        "displayName": "Small",
        "resources": {"cpu": "250m", "memory": "256Mi"},
    }
    assert (await client.post(PROFILES, json=body)).status_code == 200
    refused(await client.post(PROFILES, json=body), 409)
    refused(await client.post(PROFILES, json={**body, "apiName": "agent-1x"}), 409)
    bad = {**body, "apiName": "other", "resources": {"cpu": "lots", "memory": "1Gi"}}
    refused(await client.post(PROFILES, json=bad), 400)
    tiny = {**body, "apiName": "other", "resources": {"cpu": "1", "memory": "1Mi"}}
    refused(await client.post(PROFILES, json=tiny), 400)
    refused(await client.post(PROFILES, json={**body, "apiName": "Bad Name"}), 400)

    small = (await profile_names(client))["small"]
    assert small == {
        "api_name": "small",
        "display_name": "Small",
        "resources": {"cpu": "250m", "memory": "256Mi"},
        "custom": True,
        "enabled": True,
    }
    resp = await client.patch(
        f"{PROFILES}/small", json={"resources": {"cpu": "1", "memory": "512Mi"}}
    )
    assert resp.json()["agentProfile"]["resources"] == {"cpu": "1", "memory": "512Mi"}
    assert (await client.patch(f"{PROFILES}/small", json={"enabled": False})).status_code == 200
    assert not (await profile_names(client))["small"]["enabled"]
    refused(
        await client.patch(f"{PROFILES}/agent-1x", json={"enabled": False}), 400, "BUILT_IN_PROFILE"
    )
    refused(await client.patch(f"{PROFILES}/nobody", json={"enabled": False}), 404)

    # a disabled or unknown profile is refused before anything is written
    deploy = {"serviceName": "bot", "image": "/nonexistent-folder:latest"}
    for profile in ("small", "nobody"):
        resp = await client.post(SERVICES, json={**deploy, "agentProfile": profile})
        assert resp.status_code == 400, resp.text
    assert (await client.patch(f"{PROFILES}/small", json={"enabled": True})).status_code == 200


async def test_deploy_fields_are_checked_before_anything_is_written(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    folder = tmp_path / "bot"
    folder.mkdir()
    (folder / "bot.py").write_text("async def bot(runner_args):\n    pass\n")
    deploy = {"serviceName": "bot", "image": f"{folder}:latest"}
    refused(
        await client.post(SERVICES, json={**deploy, "architecture": "arm64"}),
        400,
        "ARCHITECTURE_NOT_SUPPORTED",
    )
    refused(await client.post(SERVICES, json={**deploy, "architecture": "sparc"}), 400)
    refused(await client.post(SERVICES, json={**deploy, "websocketAuth": "maybe"}), 400)
    refused(await client.post(SERVICES, json={**deploy, "krispViva": {"audioFilter": "x"}}), 400)
    both = {**deploy, "agentProfile": "agent-2x", "resources": {"cpu": "1", "memory": "1Gi"}}
    refused(await client.post(SERVICES, json=both), 400)
    refused(await client.post(SERVICES, json={**deploy, "resources": {"cpu": "1"}}), 400)
    assert (await client.get(f"{SERVICES}/bot")).status_code == 404

    regions = (await client.get(f"/v1/organizations/{ORG}/regions")).json()["regions"]
    assert regions[0]["supported_architectures"] == ["amd64"]
