"""``POST /whatsapp`` with fake credentials: only refusals, so nothing ever calls Meta's API.

A correctly signed "connect" webhook would make the runtime pre-accept the call at
graph.facebook.com, so no test sends one.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from tests.support.processes import TEST_BOTS

PROBE = TEST_BOTS / "probe"
APP_SECRET = "fake-app-secret"
WHATSAPP_ENV = {
    "WHATSAPP_TOKEN": "fake-token",
    "WHATSAPP_PHONE_NUMBER_ID": "1234567890",
    "WHATSAPP_APP_SECRET": APP_SECRET,
}
# A call webhook as Meta sends it; refused before it reaches the WhatsApp client.
CONNECT = {
    "object": "whatsapp_business_account",
    "entry": [
        {
            "id": "102290129340398",
            "changes": [
                {
                    "field": "calls",
                    "value": {
                        "messaging_product": "whatsapp",
                        "metadata": {
                            "display_phone_number": "15550783881",
                            "phone_number_id": "1234567890",
                        },
                        "contacts": [{"profile": {"name": "Caller"}, "wa_id": "15550100"}],
                        "calls": [
                            {
                                "id": "wacid.test",
                                "from": "15550100",
                                "to": "15550783881",
                                "event": "connect",
                                "timestamp": "1700000000",
                                "direction": "USER_INITIATED",
                                "session": {"sdp_type": "offer", "sdp": "v=0\r\n"},
                            }
                        ],
                    },
                }
            ],
        }
    ],
}


def sign(raw: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def post(url: str, raw: bytes, signature: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    return httpx.post(url + "/whatsapp", content=raw, headers=headers, timeout=30)


@pytest.fixture
def whatsapp_runtime(start_runtime):
    return start_runtime(PROBE, **WHATSAPP_ENV)


@pytest.mark.parametrize(
    "raw",
    [json.dumps(CONNECT).encode(), json.dumps({**CONNECT, "object": "page"}).encode(), b"[]"],
    ids=["connect", "other-object", "malformed"],
)
def test_wrong_signature_is_a_401(whatsapp_runtime, raw: bytes) -> None:
    """Checked before anything else: an unsigned body is not even parsed."""
    rt = whatsapp_runtime
    for signature in (
        None,
        "",
        "sha256=" + "0" * 64,
        sign(raw, "another-secret"),
        sign(raw + b" "),
        sign(raw).removeprefix("sha256="),  # the right digest without its scheme
    ):
        resp = post(rt.url, raw, signature)
        assert resp.status_code == 401, (signature, resp.text)
        assert set(resp.json()) == {"code", "error"}
        assert "X-Hub-Signature-256" in resp.json()["error"]
    assert "Starting bot session" not in rt.logs()
    assert "Processing connect event" not in rt.logs()


def test_signed_webhook_for_another_object_is_a_400(whatsapp_runtime) -> None:
    rt = whatsapp_runtime
    raw = json.dumps({**CONNECT, "object": "page"}).encode()
    resp = post(rt.url, raw, sign(raw))
    assert resp.status_code == 400
    assert set(resp.json()) == {"code", "error"}
    assert "object" in resp.json()["error"]
    assert "Starting bot session" not in rt.logs()


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"object": "whatsapp_business_account"}', b'{"entry": []}']
)
def test_malformed_webhook_is_a_400(whatsapp_runtime, raw: bytes) -> None:
    resp = post(whatsapp_runtime.url, raw, sign(raw))
    assert resp.status_code == 400
    assert set(resp.json()) == {"code", "error"}


def test_signed_webhook_without_call_events_is_a_400(whatsapp_runtime) -> None:
    raw = json.dumps({"object": "whatsapp_business_account", "entry": []}).encode()
    resp = post(whatsapp_runtime.url, raw, sign(raw))
    assert resp.status_code == 400
    assert "No supported event" in resp.json()["error"]


def test_without_its_variables_there_is_no_whatsapp_route(start_runtime) -> None:
    rt = start_runtime(PROBE)
    raw = json.dumps(CONNECT).encode()
    resp = post(rt.url, raw, sign(raw))
    assert resp.status_code in (404, 405)
    assert set(resp.json()) == {"code", "error"}
