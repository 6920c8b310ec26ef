"""WhatsApp Business webhooks: Meta's verification, signatures, and calls forwarded to instances.

The agent is a test bot that answers ``POST /whatsapp`` itself with what it received (the
runtime's own WhatsApp route, which would call Meta, is off: no ``WHATSAPP_TOKEN``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from pathlib import Path

import httpx

from tests.integration.control.helpers import (
    add_organization,
    get_session,
    list_sessions,
    put_secrets,
    refused,
    stop_session,
    wait_ended,
    wait_pool,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS

WHATSAPP_BOT = TEST_BOTS / "whatsapp-route"
APP_SECRET = "the-whatsapp-app-secret"
VERIFY_TOKEN = "the-verify-token"


def url(control: ControlPlane, agent: str = "wa", org: str = ORG) -> str:
    return f"{control.url}/v1/public/webhooks/{org}/{agent}/whatsapp"


def deploy(control: ControlPlane) -> None:
    put_secrets(
        control,
        "whatsapp",
        WHATSAPP_APP_SECRET=APP_SECRET,
        WHATSAPP_WEBHOOK_VERIFICATION_TOKEN=VERIFY_TOKEN,
    )
    control.deploy(
        "wa", WHATSAPP_BOT, secretSet="whatsapp", autoScaling={"minAgents": 1, "maxAgents": 1}
    )


def sign(raw: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def post(control: ControlPlane, raw: bytes, signature: str | None, agent: str = "wa"):
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    return httpx.post(url(control, agent), content=raw, headers=headers, timeout=60)


def webhook(value: dict) -> bytes:
    """Meta's envelope around one change's ``value``."""
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "calls"}]}],
    }
    return json.dumps(body).encode()


METADATA = {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"}


def connect(call_id: str) -> bytes:
    return webhook(
        {
            "messaging_product": "whatsapp",
            "metadata": METADATA,
            "contacts": [{"profile": {"name": "Caller"}, "wa_id": "15552223333"}],
            "calls": [
                {
                    "id": call_id,
                    "from": "15552223333",
                    "to": "15550001111",
                    "event": "connect",
                    "timestamp": "1700000000",
                    "direction": "USER_INITIATED",
                    "session": {"sdp_type": "offer", "sdp": "v=0\r\n"},
                }
            ],
        }
    )


def terminate(call_id: str) -> bytes:
    return webhook(
        {
            "messaging_product": "whatsapp",
            "metadata": METADATA,
            "calls": [
                {
                    "id": call_id,
                    "from": "15552223333",
                    "to": "15550001111",
                    "event": "terminate",
                    "timestamp": "1700000060",
                    "direction": "USER_INITIATED",
                    "status": "COMPLETED",
                }
            ],
        }
    )


def test_verification(control: ControlPlane) -> None:
    deploy(control)
    public_key = control.public_key()
    other = add_organization(control, "other-org")

    def verify(token: str, mode: str = "subscribe", agent: str = "wa") -> httpx.Response:
        params = {"hub.mode": mode, "hub.verify_token": token, "hub.challenge": "1158201444"}
        return httpx.get(url(control, agent), params=params, timeout=30)

    for token in (public_key, VERIFY_TOKEN):
        resp = verify(token)
        assert resp.status_code == 200, resp.text
        assert resp.text == "1158201444"
    refused(verify(public_key, mode="unsubscribe"), 403)
    refused(verify("wrong"), 403)
    refused(verify(""), 403)
    refused(verify(control.admin_token), 403)  # not a public key
    refused(verify(other.public_key), 403)  # another organization's
    refused(verify(public_key, agent="nobody"), 404)


def test_signatures_are_checked(control: ControlPlane) -> None:
    deploy(control)
    raw = connect(f"wacid.{uuid.uuid4().hex}")
    refused(post(control, raw, None), 401)
    refused(post(control, raw, "sha256=" + "0" * 64), 401)
    refused(post(control, raw, sign(raw, "another-secret")), 401)
    refused(post(control, raw, sign(raw).removeprefix("sha256=")), 401)
    refused(post(control, raw + b" ", sign(raw)), 401)
    refused(post(control, raw, sign(raw), agent="nobody"), 404)
    wait_pool(control, "wa", idle=1, busy=0)

    # An agent without WHATSAPP_APP_SECRET can't check anything: it takes no webhooks.
    control.deploy("plain", WHATSAPP_BOT, autoScaling={"minAgents": 0, "maxAgents": 1})
    refused(post(control, raw, sign(raw), agent="plain"), 403)


def test_calls_reach_one_instance_each(control: ControlPlane, tmp_path: Path) -> None:
    deploy(control)
    call = f"wacid.{uuid.uuid4().hex}"

    # A call's connect starts a session on an instance, which gets the webhook as Meta sent it.
    raw = connect(call)
    resp = post(control, raw, sign(raw))
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["signature"] == sign(raw) and got["body"] == raw.decode()
    session_id = got["session_id"]
    assert uuid.UUID(session_id)
    session = get_session(control, "wa", session_id)
    assert session["endedAt"] is None
    wait_pool(control, "wa", busy=1)

    # Meta retrying the connect starts nothing more.
    resp = post(control, raw, sign(raw))
    assert resp.status_code == 200 and resp.json()["status"] == "ignored", resp.text

    # Another call finds the only instance busy: refused, and recorded as a missed call.
    other = connect(f"wacid.{uuid.uuid4().hex}")
    refused(post(control, other, sign(other)), 429, "PCC-AGENT-AT-CAPACITY")
    (missed,) = [s for s in list_sessions(control, "wa") if s["sessionId"] != session_id]
    assert missed["endState"] == "ended_before_agent_start" and missed["endedAt"], missed
    assert missed["transport"] == "whatsapp", missed

    # Events of other kinds are acknowledged and go nowhere.
    status = webhook({"messaging_product": "whatsapp", "metadata": METADATA, "statuses": []})
    resp = post(control, status, sign(status))
    assert resp.status_code == 200 and resp.json()["status"] == "ignored", resp.text

    # The call's terminate reaches the instance answering it.
    end = terminate(call)
    resp = post(control, end, sign(end))
    assert resp.status_code == 200, resp.text
    assert resp.json()["session_id"] == session_id and resp.json()["body"] == end.decode()

    stop_session(control, "wa", session_id)
    assert wait_ended(control, "wa", session_id)["endState"] == "terminated"
    wait_pool(control, "wa", busy=0)
    resp = post(control, end, sign(end))
    assert resp.status_code == 200 and resp.json()["status"] == "ignored", resp.text


def test_a_call_the_instance_refuses_ends_its_session(control: ControlPlane) -> None:
    deploy(control)
    raw = connect(f"wacid.refuse-this-call.{uuid.uuid4().hex}")
    resp = post(control, raw, sign(raw))
    assert resp.status_code == 400, resp.text
    session_id = resp.json()["session_id"]
    assert wait_ended(control, "wa", session_id)["endState"] == "ended_before_agent_start"
    wait_pool(control, "wa", busy=0)
