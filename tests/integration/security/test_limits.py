"""Limits and validation on the API's inputs: every one a 400 (or 413) with a code, never
a 500 and never stored as sent. In process: nothing here needs a server process."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.control.helpers import refused
from tests.support.control import ORG
from tests.support.inprocess import app_client
from tests.support.processes import TEST_BOTS

SERVICES = f"/v1/organizations/{ORG}/services"
SECRETS = f"/v1/organizations/{ORG}/secrets"
IMAGE = f"{TEST_BOTS / 'probe'}:latest"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(tmp_path / "state") as client:
        yield client


async def public_key(api: httpx.AsyncClient) -> str:
    resp = await api.post(f"/v1/organizations/{ORG}/apiKeys", json={"name": "t", "type": "public"})
    assert resp.status_code == 200, resp.text
    return resp.json()["key"]


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_scaling_has_a_ceiling(api: httpx.AsyncClient) -> None:
    for scaling in ({"maxAgents": 501}, {"maxAgents": 100_000}, {"minAgents": 500}):
        body = {"serviceName": "big", "image": IMAGE, "autoScaling": scaling}
        refused(await api.post(SERVICES, json=body), 400, "GENERIC_BAD_REQUEST")
    body = {"serviceName": "big", "image": IMAGE, "autoScaling": {"minAgents": 2, "maxAgents": 1}}
    refused(await api.post(SERVICES, json=body), 400)
    refused(await api.get(f"{SERVICES}/big"), 404)


async def test_the_ceiling_is_configured(tmp_path: Path) -> None:
    async with app_client(tmp_path / "state", pools={"max_agents_limit": 3}) as api:
        body = {"serviceName": "big", "image": IMAGE, "autoScaling": {"maxAgents": 4}}
        error = refused(await api.post(SERVICES, json=body), 400)
        assert "3" in error["error"]


async def test_secret_sizes_and_set_names(api: httpx.AsyncClient) -> None:
    big = "x" * (64 * 1024 + 1)
    refused(await api.put(f"{SECRETS}/s", json={"secretKey": "K", "secretValue": big}), 413)
    refused(
        await api.put(f"{SECRETS}/s", json={"secretKey": "K", "secretValue": "x" * 3_000_000}), 413
    )
    for i in range(16):  # 16 x 64 KB = 1 MB: the set is full
        value = "v" * (64 * 1024 - 8)
        resp = await api.put(f"{SECRETS}/s", json={"secretKey": f"K{i}", "secretValue": value})
        assert resp.status_code == 200, resp.text
    over = await api.put(f"{SECRETS}/s", json={"secretKey": "MORE", "secretValue": "v" * 1024})
    refused(over, 413, "PAYLOAD_TOO_LARGE")
    # a value replaced by a smaller one still fits
    resp = await api.put(f"{SECRETS}/s", json={"secretKey": "K0", "secretValue": "small"})
    assert resp.status_code == 200, resp.text
    for name in (".", "..", ".hidden", "-x"):
        resp = await api.put(f"{SECRETS}/{name}", json={"secretKey": "K", "secretValue": "v"})
        assert resp.status_code in (400, 404, 405), (name, resp.status_code)
        assert resp.status_code != 200
    names = (await api.get(SECRETS)).json()["sets"]
    assert [s["name"] for s in names] == ["s"]


async def test_deep_json_is_a_bad_request(api: httpx.AsyncClient) -> None:
    key = await public_key(api)
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    app_secret = "the app secret"
    put = {"secretKey": "WHATSAPP_APP_SECRET", "secretValue": app_secret}
    assert (await api.put(f"{SECRETS}/wa", json=put)).status_code == 200
    for name, secret_set in (("open", None), ("wa", "wa")):
        body = {"serviceName": name, "image": IMAGE, "secretSet": secret_set}
        assert (await api.post(SERVICES, json=body)).status_code == 200
    dialin = f"/v1/public/webhooks/{ORG}/open/dialin"
    whatsapp = f"/v1/public/webhooks/{ORG}/wa/whatsapp"
    for depth in (100, 100_000):
        body = '{"body": ' + deep(depth) + "}"
        refused(await api.post("/v1/public/any/start", content=body, headers=auth), 400)
        refused(await api.post(dialin, content=body), 400)
        mac = hmac.new(app_secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        signature = {"X-Hub-Signature-256": f"sha256={mac}"}
        refused(await api.post(whatsapp, content=body, headers=signature), 400)
        deploy = '{"serviceName": "deep", "image": "' + IMAGE + '", "x": ' + deep(depth) + "}"
        json_type = {"Content-Type": "application/json"}
        refused(await api.post(SERVICES, content=deploy, headers=json_type), 400)
        put = '{"secretKey": "K", "secretValue": "v", "x": ' + deep(depth) + "}"
        refused(await api.put(f"{SECRETS}/deep", content=put, headers=json_type), 400)
        profile = '{"name": "deep", "cpu": "1", "memory": "1Gi", "x": ' + deep(depth) + "}"
        profiles = f"/v1/organizations/{ORG}/agent-profiles"
        refused(await api.post(profiles, content=profile, headers=json_type), 400)
    refused(await api.get(f"{SERVICES}/deep"), 404)
    refused(await api.get(f"{SECRETS}/deep"), 404)


async def test_images_are_checked_as_text(api: httpx.AsyncClient, tmp_path: Path) -> None:
    bad = (
        "/" + "a" * 5000 + ":latest",
        "/" + "a" * 300 + "/bot:latest",
        f" {IMAGE}",
        f"{IMAGE} ",
        f"{TEST_BOTS / 'probe'}\x00:latest",
        f"{TEST_BOTS / 'probe'}\n:latest",
    )
    for image in bad:
        body = {"serviceName": "img", "image": image}
        refused(await api.post(SERVICES, json=body), 400, "GENERIC_BAD_REQUEST")
    for field, value in (("region", "r" * 65), ("region", " local"), ("buildId", "b\x00")):
        body = {"serviceName": "img", "image": IMAGE, field: value}
        refused(await api.post(SERVICES, json=body), 400)
    refused(await api.get(f"{SERVICES}/img"), 404)


async def test_unknown_transports_are_refused(api: httpx.AsyncClient) -> None:
    key = await public_key(api)
    for transport in ("carrier-pigeon", "WEBRTC", ""):
        resp = await api.post(
            "/v1/public/any/start",
            json={"transport": transport},
            headers={"Authorization": f"Bearer {key}"},
        )
        refused(resp, 400, "GENERIC_BAD_REQUEST")
