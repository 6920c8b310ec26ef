"""Inbound webhooks' signatures, checked by the control plane in this process (``create_app``
with the fake backend): Daily's pinless dial-in HMAC (with its replay window) and Meta's
``X-Hub-Signature-256`` and verification token. A request that fails the check is refused
before anything starts; one that passes is answered."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cattery.control.api.public.webhooks import PINLESS_HMAC_SECRET, WHATSAPP_APP_SECRET
from cattery.control.whatsapp import HUB_SIGNATURE_HEADER
from tests.support.control import ORG
from tests.support.fake_backend import FakeBackend
from tests.support.inprocess import bot, fake_control_plane, settled, status_when

PINLESS_SECRET = base64.b64encode(b"the number's dial-in hmac").decode()
APP_SECRET = "the-whatsapp-app-secret"
VERIFY_TOKEN = "the-verify-token"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An agent ``agent`` deployed with the webhook secrets, on the fake backend."""
    backend = FakeBackend()
    async with fake_control_plane(tmp_path / "state", tmp_path, backend) as (client, _):
        secrets = {
            PINLESS_HMAC_SECRET: PINLESS_SECRET,
            WHATSAPP_APP_SECRET: APP_SECRET,
            "WHATSAPP_WEBHOOK_VERIFICATION_TOKEN": VERIFY_TOKEN,
        }
        for key, value in secrets.items():
            resp = await client.put(
                f"/v1/organizations/{ORG}/secrets/hooks",
                json={"name": "hooks", "secretKey": key, "secretValue": value},
            )
            assert resp.status_code == 200, resp.text
        resp = await client.post(
            "/v1/agents",
            json={"serviceName": "agent", "image": bot(tmp_path / "bot"), "secretSet": "hooks"},
        )
        assert resp.status_code == 200, resp.text
        await status_when(client, "agent", settled, "the deploy")
        client.headers.pop("Authorization")  # webhooks carry no key
        yield client
        await client.aclose()


def refused(resp: httpx.Response, status: int) -> None:
    assert resp.status_code == status, resp.text
    assert set(resp.json()) == {"code", "error"}


def pinless(timestamp: str, body: bytes, secret: str = PINLESS_SECRET) -> dict[str, str]:
    mac = hmac.new(base64.b64decode(secret), timestamp.encode() + b"." + body, hashlib.sha256)
    return {
        "x-pinless-timestamp": timestamp,
        "x-pinless-signature": base64.b64encode(mac.digest()).decode(),
    }


async def test_a_dialin_must_carry_daily_s_fresh_signature(client: httpx.AsyncClient) -> None:
    url = f"/v1/public/webhooks/{ORG}/agent/dialin"
    raw = json.dumps({"Test": "test"}).encode()
    now = str(int(time.time()))

    refused(await client.post(url, content=raw), 401)
    other = base64.b64encode(b"someone else's").decode()
    refused(await client.post(url, content=raw, headers=pinless(now, raw, other)), 401)
    tampered = json.dumps({"Test": "test", "x": 1}).encode()
    refused(await client.post(url, content=tampered, headers=pinless(now, raw)), 401)
    old = str(int(time.time()) - 3600)  # a good signature, replayed an hour later
    refused(await client.post(url, content=raw, headers=pinless(old, raw)), 401)

    resp = await client.post(url, content=raw, headers=pinless(now, raw))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "OK"}  # Daily's check of its config: nothing starts


def meta(raw: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


async def test_a_whatsapp_event_must_carry_meta_s_signature(client: httpx.AsyncClient) -> None:
    url = f"/v1/public/webhooks/{ORG}/agent/whatsapp"
    raw = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()

    async def post(body: bytes, signature: str | None) -> httpx.Response:
        headers = {HUB_SIGNATURE_HEADER: signature} if signature is not None else {}
        return await client.post(url, content=body, headers=headers)

    refused(await post(raw, None), 401)
    refused(await post(raw, "sha256=" + "0" * 64), 401)
    refused(await post(raw, meta(raw, "another-secret")), 401)
    refused(await post(raw, meta(raw).removeprefix("sha256=")), 401)
    refused(await post(raw + b" ", meta(raw)), 401)

    resp = await post(raw, meta(raw))
    assert resp.status_code == 200, resp.text  # no call in it: acknowledged, nothing starts


async def test_whatsapp_verification_wants_the_agent_s_token(client: httpx.AsyncClient) -> None:
    url = f"/v1/public/webhooks/{ORG}/agent/whatsapp"

    async def verify(token: str, mode: str = "subscribe") -> httpx.Response:
        params = {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": "1158201444"}
        return await client.get(url, params=params)

    resp = await verify(VERIFY_TOKEN)
    assert resp.status_code == 200 and resp.text == "1158201444", resp.text
    refused(await verify(VERIFY_TOKEN, mode="unsubscribe"), 403)
    refused(await verify("wrong"), 403)
    refused(await verify(""), 403)
