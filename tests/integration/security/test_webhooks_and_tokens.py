"""Webhooks and tokens: a pinless dial-in signature is good for 5 minutes, a carrier's token
opens only that carrier's route, and close reasons tell a caller no internal detail.

In process (Starlette's test client speaks WebSocket): nothing here reaches an instance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cattery.control.app import create_app
from cattery.errors import AtCapacity, CatteryError, Forbidden, ServiceUnavailable
from tests.integration.control.helpers import refused
from tests.support.control import ADMIN_TOKEN, ORG
from tests.support.inprocess import settings_for
from tests.support.processes import TEST_BOTS

SECRET = base64.b64encode(b"the number's dial-in hmac secret").decode()
DIALIN = f"/v1/public/webhooks/{ORG}/phone/dialin"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(tmp_path / "state"))
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with TestClient(app, headers=headers) as client:
        put = client.put(
            f"/v1/organizations/{ORG}/secrets/phone",
            json={"secretKey": "PINLESS_HMAC_SECRET", "secretValue": SECRET},
        )
        assert put.status_code == 200, put.text
        image = f"{TEST_BOTS / 'probe'}:latest"
        body = {"serviceName": "phone", "image": image, "secretSet": "phone"}
        assert client.post(f"/v1/organizations/{ORG}/services", json=body).status_code == 200
        yield client


def signed(timestamp: str, raw: bytes) -> dict[str, str]:
    mac = hmac.new(base64.b64decode(SECRET), timestamp.encode() + b"." + raw, hashlib.sha256)
    return {
        "x-pinless-timestamp": timestamp,
        "x-pinless-signature": base64.b64encode(mac.digest()).decode(),
        "content-type": "application/json",
    }


def test_an_old_pinless_signature_is_a_replay(api: TestClient) -> None:
    raw = json.dumps({"Test": "test"}).encode()
    now = time.time()
    for stale in (now - 330, now + 400, now - 86_400, (now - 600) * 1000):
        resp = api.post(DIALIN, content=raw, headers=signed(str(int(stale)), raw))
        refused(resp, 401)
    for fresh in (now, now - 60, now * 1000):
        resp = api.post(DIALIN, content=raw, headers=signed(str(int(fresh)), raw))
        assert resp.status_code == 200, resp.text


def test_a_carriers_token_opens_only_its_route(api: TestClient) -> None:
    key = api.post(f"/v1/organizations/{ORG}/apiKeys", json={"name": "k", "type": "public"})
    auth = {"Authorization": f"Bearer {key.json()['key']}"}
    started = api.post("/v1/public/phone/start", json={"transport": "twilio"}, headers=auth)
    assert started.status_code == 200, started.text
    token = started.json()["token"]
    for other in ("telnyx", "plivo", "exotel"):
        with pytest.raises(WebSocketDisconnect) as closed:
            with api.websocket_connect(f"/ws/{other}/{token}?serviceHost=phone.{ORG}") as ws:
                ws.receive_text()
        assert closed.value.code == 4003, closed.value
        assert closed.value.reason.startswith("FORBIDDEN: "), closed.value.reason
        assert "not for /ws/" in closed.value.reason


def test_close_reasons_carry_a_public_sentence() -> None:
    internal = "instance inst_1234 is failed; last log lines:\nTraceback ..."
    assert CatteryError(internal).public_message == "Internal server error"
    assert "default/probe" not in AtCapacity("Agent default/probe is at capacity").public_message
    assert "inst_" not in ServiceUnavailable(f"Agent 'x' is not ready: {internal}").public_message
    assert Forbidden("The WebSocket token is for another agent").public_message.startswith("The")
