"""WebSocket auth tokens: HMAC-signed, bound to one agent, valid 300 s, good for one connection.

A token is ``<payload>.<signature>``, both base64url without padding: the payload is JSON
``{"sh": "AGENT.ORG", "use": "generic" | "telephony:CARRIER", "exp": unix seconds,
"nonce": ...}``
(plus ``"sid"``, the session id a generic client's connection will get), the signature
HMAC-SHA256 of the payload's text. It is the shape of Pipecat Cloud's ``token`` and
carries what Pipecat's development runner's ``--ws-auth token`` tokens do (an expiry and a
nonce), plus the agent it is for.

The key is random per control-plane process, as the record of used tokens is in memory:
after a restart every earlier token is refused, so none can be used twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

TOKEN_TTL_SECONDS = 300
#: what a token opens: a generic client's ``/ws/generic/...``, or one carrier's
#: ``/ws/{carrier}`` (``telephony_use(carrier)``): a token for Twilio opens no other's route
GENERIC, TELEPHONY = "generic", "telephony"


def telephony_use(carrier: str) -> str:
    """The ``use`` of a token that opens ``carrier``'s media WebSocket, and no other's."""
    return f"{TELEPHONY}:{carrier}"


def _valid_use(use: str) -> bool:
    kind, sep, carrier = use.partition(":")
    return use == GENERIC or (kind == TELEPHONY and bool(sep) and bool(carrier))


@dataclass(frozen=True)
class WsClaims:
    service_host: str
    use: str
    expires_at: int
    nonce: str
    session_id: str | None = None


class WsTokens:
    """Issues and checks tokens; remembers the nonces used until they expire.

    Owned by the control plane's state. Single-threaded (the event loop), so no lock.
    """

    def __init__(
        self,
        key: bytes | None = None,
        *,
        ttl: int = TOKEN_TTL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key or secrets.token_bytes(32)
        self._ttl = ttl
        self._clock = clock
        self._used: dict[str, int] = {}  # nonce -> expiry

    def issue(self, service_host: str, use: str, *, session_id: str | None = None) -> str:
        if not _valid_use(use):
            raise ValueError(f"a token opens {GENERIC!r} or telephony_use(carrier), not {use!r}")
        claims: dict[str, object] = {
            "sh": service_host,
            "use": use,
            "exp": int(self._clock()) + self._ttl,
            "nonce": secrets.token_hex(12),
        }
        if session_id is not None:
            claims["sid"] = session_id
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def check(self, token: str) -> WsClaims | None:
        """The token's claims if it is signed by us, unexpired and unused; else None.

        Checking does not use the token up: ``consume`` does, once the connection is let in.
        """
        payload, dot, signature = token.partition(".")
        expected = self._sign(payload).encode()
        if not dot or not hmac.compare_digest(expected, signature.encode(errors="replace")):
            return None
        try:
            data = json.loads(_unb64(payload))
            claims = WsClaims(
                service_host=str(data["sh"]),
                use=str(data["use"]),
                expires_at=int(data["exp"]),
                nonce=str(data["nonce"]),
                session_id=str(data["sid"]) if data.get("sid") else None,
            )
        except (ValueError, KeyError, TypeError):
            return None
        if claims.expires_at < self._clock() or claims.nonce in self._used:
            return None
        return claims

    def consume(self, claims: WsClaims) -> bool:
        """Use the token up; False when it already was (a replay) or has expired meanwhile."""
        now = self._clock()
        self._used = {nonce: exp for nonce, exp in self._used.items() if exp >= now}
        if claims.nonce in self._used or claims.expires_at < now:
            return False
        self._used[claims.nonce] = claims.expires_at
        return True

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
