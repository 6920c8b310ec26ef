"""Properties, ``/auth/config`` and the Pipecat Cloud features a self-hosted cattery
answers with 501 ``NOT_AVAILABLE_SELF_HOSTED``, on the control plane in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.control import ADMIN_TOKEN, ORG
from tests.support.inprocess import BASE_URL, running_app, settings_for

BASE = f"/v1/organizations/{ORG}"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(tmp_path / "state", regions=["local", "eu-lab"])
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers) as c:
            yield c


async def test_default_region_is_shown_and_set(client: httpx.AsyncClient) -> None:
    schema = (await client.get(f"{BASE}/properties/schema")).json()["properties"]
    assert schema["defaultRegion"]["currentValue"] == "local"
    assert schema["defaultRegion"]["availableValues"] == ["local", "eu-lab"]
    resp = await client.patch(f"{BASE}/properties", json={"defaultRegion": "eu-lab"})
    assert resp.json() == {"properties": {"defaultRegion": "eu-lab"}}
    assert (await client.get(f"{BASE}/properties")).json()["properties"][
        "defaultRegion"
    ] == "eu-lab"
    bad = await client.patch(f"{BASE}/properties", json={"defaultRegion": "mars"})
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_REGION"
    other = await client.patch(f"{BASE}/properties", json={"colour": "red"})
    assert other.status_code == 400


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"{BASE}/spend-limit"),
        ("GET", f"{BASE}/github/install-url"),
        ("GET", f"{BASE}/github/link-url"),
        ("DELETE", f"{BASE}/github/installation"),
        ("GET", f"{BASE}/github/repositories"),
        ("POST", f"{BASE}/services/bot/environments/production/git"),
        ("POST", f"{BASE}/services/bot/environments/production/git/deploy"),
        ("GET", f"{BASE}/registry-keys"),
        ("POST", f"{BASE}/registry-keys"),
        ("DELETE", f"{BASE}/registry-keys/rk_1"),
        ("POST", f"{BASE}/secrets/references"),
        ("GET", "/auth/config"),
    ],
)
async def test_what_has_no_meaning_self_hosted_says_what_to_do(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    resp = await client.request(method, path, json={})
    assert resp.status_code == 501, resp.text
    body = resp.json()
    assert body["code"] == "NOT_AVAILABLE_SELF_HOSTED"
    assert len(body["error"].split()) > 8, body


async def test_read_only_questions_answer_none(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{BASE}/github/installation")).json() == {"installation": None}
    assert (await client.get(f"{BASE}/spend-limit")).json()["limitCents"] is None


async def test_auth_config_names_the_configured_issuer(tmp_path: Path) -> None:
    settings = settings_for(
        tmp_path / "state",
        oidc={"issuer": "https://id.example.test", "client_id": "cattery-cli"},
    )
    async with running_app(settings) as app:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE_URL
        ) as client:
            body = (await client.get("/auth/config")).json()
    assert body["issuer"] == "https://id.example.test"
    assert body["client_id"] == "cattery-cli" and "openid" in body["scopes"]
