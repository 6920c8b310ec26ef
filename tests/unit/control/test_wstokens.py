"""WebSocket auth tokens: signed, bound to an agent and a route, expiring, single use."""

from __future__ import annotations

import base64
import json

import pytest

from cattery.control.mediasockets import close_code
from cattery.control.wstokens import GENERIC, TOKEN_TTL_SECONDS, WsTokens, telephony_use
from cattery.errors import (
    AgentNotFound,
    AtCapacity,
    CatteryError,
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
)
from cattery.integrations.telephony import named_service_host

TELEPHONY = telephony_use("twilio")


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tokens(clock: Clock) -> WsTokens:
    return WsTokens(b"k" * 32, clock=clock)


def test_a_token_names_its_agent_route_and_session(tokens: WsTokens, clock: Clock) -> None:
    token = tokens.issue("bot.acme", GENERIC, session_id="s-1")
    claims = tokens.check(token)
    assert claims is not None
    assert (claims.service_host, claims.use, claims.session_id) == ("bot.acme", GENERIC, "s-1")
    assert claims.expires_at == int(clock.now) + TOKEN_TTL_SECONDS
    assert tokens.check(tokens.issue("bot.acme", TELEPHONY)).session_id is None  # type: ignore[union-attr]


def test_a_token_is_good_for_one_connection(tokens: WsTokens) -> None:
    claims = tokens.check(tokens.issue("bot.acme", TELEPHONY))
    assert claims is not None
    assert tokens.consume(claims) is True
    assert tokens.consume(claims) is False
    assert tokens.check(tokens.issue("bot.acme", TELEPHONY)) is not None  # others still are


def test_a_used_token_no_longer_checks(tokens: WsTokens) -> None:
    token = tokens.issue("bot.acme", TELEPHONY)
    claims = tokens.check(token)
    assert claims is not None and tokens.consume(claims)
    assert tokens.check(token) is None


def test_a_token_expires_after_300_seconds(tokens: WsTokens, clock: Clock) -> None:
    token = tokens.issue("bot.acme", GENERIC)
    clock.now += TOKEN_TTL_SECONDS
    claims = tokens.check(token)
    assert claims is not None
    clock.now += 1
    assert tokens.check(token) is None
    assert tokens.consume(claims) is False


def test_used_tokens_are_forgotten_once_expired(tokens: WsTokens, clock: Clock) -> None:
    for _ in range(3):
        claims = tokens.check(tokens.issue("bot.acme", GENERIC))
        assert claims is not None and tokens.consume(claims)
    clock.now += TOKEN_TTL_SECONDS + 1
    claims = tokens.check(tokens.issue("bot.acme", GENERIC))
    assert claims is not None and tokens.consume(claims)
    assert len(tokens._used) == 1


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: t + "x",
        lambda t: t.replace(".", ""),
        lambda t: "",
        lambda t: "é." + t.partition(".")[2],
        lambda t: t.partition(".")[0] + ".",
    ],
)
def test_forged_tokens_do_not_check(tokens: WsTokens, forge) -> None:
    assert tokens.check(forge(tokens.issue("bot.acme", GENERIC))) is None


def test_a_rewritten_payload_or_another_key_does_not_check(tokens: WsTokens, clock: Clock) -> None:
    token = tokens.issue("bot.acme", GENERIC)
    payload, _, signature = token.partition(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data["sh"] = "other.acme"
    rewritten = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    assert tokens.check(f"{rewritten}.{signature}") is None
    assert WsTokens(b"j" * 32, clock=clock).check(token) is None
    assert WsTokens(clock=clock).check(WsTokens(clock=clock).issue("a.b", GENERIC)) is None


def test_only_known_uses() -> None:
    with pytest.raises(ValueError):
        WsTokens().issue("bot.acme", "anything")


def test_close_codes_say_what_the_http_status_would() -> None:
    assert close_code(Forbidden()) == 4003
    assert close_code(AtCapacity()) == 1013
    assert close_code(ServiceUnavailable()) == 1013
    assert close_code(AgentNotFound()) == 4404
    assert close_code(InvalidRequest()) == 4400
    assert close_code(PayloadTooLarge()) == 4413
    assert close_code(CatteryError()) == 1011


def test_twilio_names_the_agent_in_its_start_message() -> None:
    start = {"event": "start", "start": {"customParameters": {"_pipecatCloudServiceHost": "a.b"}}}
    assert named_service_host(start) == "a.b"
    exotel = {"event": "start", "start": {"custom_parameters": {"_pipecatCloudServiceHost": "c.d"}}}
    assert named_service_host(exotel) == "c.d"
    for other in [{"event": "connected"}, {}, {"start": "x"}]:
        assert named_service_host(other) is None
