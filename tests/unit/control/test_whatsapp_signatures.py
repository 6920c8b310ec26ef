"""Meta's ``X-Hub-Signature-256`` and the calls a WhatsApp webhook carries."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cattery.control.whatsapp import call_events, hub_signature_ok
from cattery.errors import InvalidRequest

SECRET = "app-secret"
RAW = b'{"object":"whatsapp_business_account"}'


def _sign(raw: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def test_meta_s_signature_of_the_raw_body_is_accepted() -> None:
    assert hub_signature_ok(SECRET, RAW, _sign(RAW))


@pytest.mark.parametrize(
    "header",
    [None, "", _sign(RAW, "other-secret"), _sign(RAW + b" "), _sign(RAW).removeprefix("sha256=")],
)
def test_any_other_signature_is_refused(header: str | None) -> None:
    assert not hub_signature_ok(SECRET, RAW, header)


def test_call_events_are_read_in_order_and_anything_else_is_skipped() -> None:
    data = {
        "object": "whatsapp_business_account",
        "entry": [
            {"changes": [{"value": {"calls": [{"id": "c1", "event": "connect"}, "junk"]}}]},
            {"changes": "junk"},
            {"changes": [{"value": {"calls": [{"id": "c1", "event": "terminate"}]}}]},
        ],
    }
    assert call_events(data) == [("c1", "connect"), ("c1", "terminate")]


def test_a_webhook_of_another_kind_is_a_bad_request() -> None:
    with pytest.raises(InvalidRequest):
        call_events({"object": "page", "entry": []})
