"""Webhooks other platforms call for an agent: Daily PSTN dial-in, and WhatsApp Business.

``POST /v1/public/webhooks/{org}/{agent}/dialin``
    Daily's pinless dial-in ``room_creation_api``. Pipecat Cloud's URL carries no key, and
    Daily sends none, so the route is open, as there: it checks that the organization (name
    or id) and agent exist and that the payload is Daily's (``From``, ``To``, ``callId`` and
    ``callDomain`` as UUIDs, optional ``sipHeaders``), and never answers with a meeting
    token. When the agent's secret set holds ``PINLESS_HMAC_SECRET`` (the base64 ``hmac`` of
    the number's dial-in config), every request must carry Daily's signature:
    ``X-Pinless-Signature`` = base64 HMAC-SHA256 of ``"{X-Pinless-Timestamp}.{raw body}"``,
    with a timestamp (Unix seconds) within 5 minutes of now: an older one is a replay.
    A ``test``/``Test`` payload (Daily's check of a new config) answers 200 and starts nothing.
    Otherwise a SIP dial-in room is made and a session starts, exactly as a ``createDailyRoom``
    start would, with a ``DailyDialinRequest`` as its body. A full pool answers 429
    ``PCC-AGENT-AT-CAPACITY`` before any room is made, and the call is recorded as a session
    that ``ended_before_agent_start``.

``GET /v1/public/webhooks/{org}/{agent}/whatsapp``
    Meta's verification: ``hub.mode=subscribe`` and a ``hub.verify_token`` that is one of the
    organization's public API keys (as Pipecat Cloud asks) or the agent's secret
    ``WHATSAPP_WEBHOOK_VERIFICATION_TOKEN`` gets ``hub.challenge`` back; anything else a 403.

``POST /v1/public/webhooks/{org}/{agent}/whatsapp``
    ``X-Hub-Signature-256`` must be Meta's HMAC of the raw body with the agent's secret
    ``WHATSAPP_APP_SECRET`` (401 when missing or wrong). A call's ``connect`` starts a
    session: an instance from the agent's pool gets the raw body and signature at its
    ``/whatsapp`` route, and the runtime answers the call; a full pool answers 429 and the
    call is recorded, as a dial-in's is. Later events of that call (``terminate``) go to the
    same instance. Anything else is acknowledged and dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from cattery import jsonlimits
from cattery.control import whatsapp
from cattery.control.agents import deployment_secrets, get_agent
from cattery.control.daily import daily_client
from cattery.control.deps import DB, State
from cattery.control.sessions import StartRequest, start_now
from cattery.control.state import ControlState
from cattery.errors import Forbidden, InvalidRequest, NotFound, PayloadTooLarge, Unauthorized
from cattery.store import repositories as repo
from cattery.store.models import Agent, ApiKeyKind, Organization

MAX_WEBHOOK_BYTES = 256 * 1024
PINLESS_HMAC_SECRET = "PINLESS_HMAC_SECRET"
#: a pinless signature older (or newer) than this is refused: a replay
PINLESS_MAX_AGE_SECONDS = 300.0
WHATSAPP_APP_SECRET = "WHATSAPP_APP_SECRET"
WHATSAPP_VERIFY_TOKEN = "WHATSAPP_WEBHOOK_VERIFICATION_TOKEN"


class DialinWebhook(BaseModel):
    """Daily's pinless dial-in payload; fields Daily may add later are ignored."""

    model_config = ConfigDict(extra="ignore")
    From: str = Field(min_length=1, max_length=256)
    To: str = Field(min_length=1, max_length=256)
    callId: str
    callDomain: str
    sipHeaders: dict[str, str] | None = None

    @field_validator("callId", "callDomain")
    @classmethod
    def _uuid(cls, value: str) -> str:
        uuid.UUID(value)
        return value


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post("/v1/public/webhooks/{org}/{name}/dialin")
    async def dialin(request: Request, state: State, db: DB, org: str, name: str) -> dict:
        requested_at = time.monotonic()
        raw = await _read_body(request)
        organization, agent = await _agent(db, org, name)
        hmac_secret = (await deployment_secrets(state, db, agent)).get(PINLESS_HMAC_SECRET)
        await db.commit()  # no connection held while the start waits for an instance
        if hmac_secret and not _pinless_signature_ok(hmac_secret, raw, request):
            raise Unauthorized("Missing or invalid X-Pinless-Signature")
        data = _json_object(raw)
        if data.get("test") or data.get("Test"):
            return {"status": "OK"}
        try:
            call = DialinWebhook.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequest(f"Invalid dial-in webhook: {_first_error(exc)}") from exc
        daily_client(state)  # a 400 naming DAILY_API_KEY before anything starts
        req = StartRequest(
            createDailyRoom=True,
            dailyRoomProperties={
                "sip": {
                    "display_name": call.From,
                    "video": False,
                    "sip_mode": "dial-in",
                    "num_endpoints": 1,
                },
                "start_video_off": True,
            },
            body=_dialin_body(state, call),
        )
        # a full pool: 429, and the call recorded as a refused session
        answer = await start_now(
            state, organization, name, req, requested_at=requested_at, record_refusal=True
        )
        # The meeting token stays here: whoever calls this open route gets no way in.
        return {"status": "OK", "sessionId": answer["sessionId"], "dailyRoom": answer["dailyRoom"]}

    @router.get("/v1/public/webhooks/{org}/{name}/whatsapp")
    async def whatsapp_verify(
        request: Request, state: State, db: DB, org: str, name: str
    ) -> PlainTextResponse:
        organization, agent = await _agent(db, org, name)
        params = request.query_params
        token = params.get("hub.verify_token") or ""
        if params.get("hub.mode") != "subscribe" or not await _verify_token_ok(
            state, db, organization, agent, token
        ):
            raise Forbidden("WhatsApp webhook verification failed: wrong hub.mode or verify token")
        return PlainTextResponse(params.get("hub.challenge") or "")

    @router.post("/v1/public/webhooks/{org}/{name}/whatsapp")
    async def whatsapp_event(
        request: Request, state: State, db: DB, org: str, name: str
    ) -> Response:
        requested_at = time.monotonic()
        raw = await _read_body(request)
        organization, agent = await _agent(db, org, name)
        secret = (await deployment_secrets(state, db, agent)).get(WHATSAPP_APP_SECRET)
        await db.commit()  # no connection held while the start waits for an instance
        if not secret:
            raise Forbidden(f"Agent {name!r} has no {WHATSAPP_APP_SECRET} in its secret set")
        signature = request.headers.get(whatsapp.HUB_SIGNATURE_HEADER)
        if not whatsapp.hub_signature_ok(secret, raw, signature):
            raise Unauthorized("Missing or invalid X-Hub-Signature-256")
        events = whatsapp.call_events(_json_object(raw))
        return await whatsapp.handle_webhook(
            state, organization, name, events, raw, signature, requested_at=requested_at
        )

    return router


# -- the agent and its secrets -----------------------------------------------------------------


async def _agent(db: AsyncSession, org: str, name: str) -> tuple[Organization, Agent]:
    """The organization (by name, or by id as Pipecat Cloud's URLs have it) and its agent."""
    organization = await repo.get_organization_by_name(db, org)
    if organization is None:
        organization = await repo.get_organization(db, org)
    if organization is None:
        raise NotFound(f"Organization {org!r} not found")
    return organization, await get_agent(db, organization, name)


async def _verify_token_ok(
    state: ControlState, db: AsyncSession, organization: Organization, agent: Agent, token: str
) -> bool:
    if not token:
        return False
    found = await repo.find_active_api_key(db, token)
    if found is not None:
        key, key_org = found
        return key_org.id == organization.id and key.kind == ApiKeyKind.PUBLIC
    configured = (await deployment_secrets(state, db, agent)).get(WHATSAPP_VERIFY_TOKEN)
    return bool(configured) and hmac.compare_digest(configured.encode(), token.encode())


# -- payloads and signatures ---------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_WEBHOOK_BYTES:
        raise PayloadTooLarge(f"Webhook body is {len(raw)} bytes; the limit is 256 KB")
    return raw


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        data = jsonlimits.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"Webhook body must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("Webhook body must be a JSON object")
    return data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "body"
    return f"{where}: {err.get('msg', 'invalid')}"


def _pinless_fresh(timestamp: str, now: float) -> bool:
    """A signature's timestamp (Unix seconds, or milliseconds) is within 5 minutes of now:
    an older request is a replay, however good its signature."""
    try:
        when = float(timestamp)
    except ValueError:
        return False
    if when > 1e12:  # milliseconds
        when /= 1000
    return abs(now - when) <= PINLESS_MAX_AGE_SECONDS


def _pinless_signature_ok(secret: str, raw: bytes, request: Request) -> bool:
    timestamp = request.headers.get("x-pinless-timestamp")
    signature = request.headers.get("x-pinless-signature")
    if not timestamp or not signature or not _pinless_fresh(timestamp, time.time()):
        return False
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        return False
    digest = hmac.new(key, timestamp.encode() + b"." + raw, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), signature.encode())


def _dialin_body(state: ControlState, call: DialinWebhook) -> dict[str, Any]:
    """The session body Pipecat's dial-in bots parse: a ``DailyDialinRequest``."""
    # Imported here: Pipecat is a runtime dependency the control plane needs only now.
    from pipecat.runner.types import DailyDialinRequest, DialinSettings

    daily = state.settings.daily
    request = DailyDialinRequest(
        dialin_settings=DialinSettings(
            call_id=call.callId,
            call_domain=call.callDomain,
            To=call.To,
            From=call.From,
            sip_headers=call.sipHeaders,
        ),
        daily_api_key=daily.api_key.get_secret_value() if daily.api_key else "",
        daily_api_url=daily.api_url,
    )
    return request.model_dump()
