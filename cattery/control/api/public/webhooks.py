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

import asyncio
import base64
import binascii
import hashlib
import hmac
import time
import uuid
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy.ext.asyncio import AsyncSession

from cattery import jsonlimits
from cattery.control.api.private.services import get_agent
from cattery.control.api.public.start import StartRequest, start_session
from cattery.control.daily import daily_client
from cattery.control.deps import DB, State
from cattery.control.placement import agent_target, place, refusals_recorded
from cattery.control.state import ControlState
from cattery.control.supervisor import LiveSession
from cattery.errors import (
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
)
from cattery.runtime.options import INSTANCE_TOKEN_HEADER
from cattery.store import repositories as repo
from cattery.store.models import Agent, ApiKeyKind, Organization

MAX_WEBHOOK_BYTES = 256 * 1024
PINLESS_HMAC_SECRET = "PINLESS_HMAC_SECRET"
#: a pinless signature older (or newer) than this is refused: a replay
PINLESS_MAX_AGE_SECONDS = 300.0
WHATSAPP_APP_SECRET = "WHATSAPP_APP_SECRET"
WHATSAPP_VERIFY_TOKEN = "WHATSAPP_WEBHOOK_VERIFICATION_TOKEN"
BUSINESS_ACCOUNT = "whatsapp_business_account"
FORWARD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
SESSION_ID_HEADER = "x-daily-session-id"
HUB_SIGNATURE_HEADER = "x-hub-signature-256"
#: the end state of a session whose instance never took its call
NOT_STARTED = "ended_before_agent_start"


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
    #: WhatsApp call id -> the session answering it, while that session is live
    calls: dict[str, str] = {}
    #: calls whose session is being started (Meta retries a webhook it waited too long for)
    starting: set[str] = set()

    @router.post("/v1/public/webhooks/{org}/{name}/dialin")
    async def dialin(request: Request, state: State, db: DB, org: str, name: str) -> dict:
        requested_at = time.monotonic()
        raw = await _read_body(request)
        organization, agent = await _agent(db, org, name)
        hmac_secret = (await _agent_secrets(state, db, organization, agent)).get(
            PINLESS_HMAC_SECRET
        )
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
        async with refusals_recorded(state, agent, "daily"):  # a full pool: 429, recorded
            answer = await start_session(
                state, db, organization, name, req, requested_at=requested_at
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
    async def whatsapp(request: Request, state: State, db: DB, org: str, name: str) -> Response:
        requested_at = time.monotonic()
        raw = await _read_body(request)
        organization, agent = await _agent(db, org, name)
        secret = (await _agent_secrets(state, db, organization, agent)).get(WHATSAPP_APP_SECRET)
        if not secret:
            raise Forbidden(f"Agent {name!r} has no {WHATSAPP_APP_SECRET} in its secret set")
        signature = request.headers.get(HUB_SIGNATURE_HEADER)
        if not _hub_signature_ok(secret, raw, signature):
            raise Unauthorized("Missing or invalid X-Hub-Signature-256")
        events = _call_events(_json_object(raw))
        for stale in [c for c, s in calls.items() if state.supervisor.get(s) is None]:
            calls.pop(stale, None)
        connect = next((call for call, event in events if event == "connect"), None)
        if connect is not None and connect not in calls and connect not in starting:
            starting.add(connect)
            try:
                live, answered = await _start_whatsapp_session(
                    state, db, organization, agent, raw, signature, requested_at=requested_at
                )
                calls[connect] = live.id
            finally:
                starting.discard(connect)
            return await _answer(live, answered)
        for call, _ in events:
            live = state.supervisor.get(calls.get(call, ""))
            if live is not None and call != connect:
                return await _forward(state, live, raw, signature)
        return JSONResponse(
            {"status": "ignored", "message": "Neither a new call nor one of a live session"}
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


async def _agent_secrets(
    state: ControlState, db: AsyncSession, organization: Organization, agent: Agent
) -> dict[str, str]:
    """The values of the secret set of the agent's active deployment (none: empty)."""
    if agent.active_deployment_id is None:
        return {}
    dep = await repo.get_deployment(db, agent.active_deployment_id)
    if dep is None or not dep.secret_set:
        return {}
    secret_set = await repo.get_secret_set(db, organization.id, dep.secret_set)
    if secret_set is None:
        return {}
    return await repo.get_secret_values(db, state.box, secret_set)


async def _verify_token_ok(
    state: ControlState, db: AsyncSession, organization: Organization, agent: Agent, token: str
) -> bool:
    if not token:
        return False
    found = await repo.find_active_api_key(db, token)
    if found is not None:
        key, key_org = found
        return key_org.id == organization.id and key.kind == ApiKeyKind.PUBLIC
    configured = (await _agent_secrets(state, db, organization, agent)).get(WHATSAPP_VERIFY_TOKEN)
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


def _hub_signature_ok(secret: str, raw: bytes, header: str | None) -> bool:
    """Meta signs the raw body with the app secret: ``sha256=<hex hmac>``."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256=").encode(), expected.encode())


def _call_events(data: dict[str, Any]) -> list[tuple[str, str]]:
    """Every ``(call id, event)`` in a WhatsApp Business webhook, in order."""
    if data.get("object") != BUSINESS_ACCOUNT:
        raise InvalidRequest(f"Invalid object type: {data.get('object')!r}")
    entries = data.get("entry")
    if not isinstance(entries, list):
        raise InvalidRequest("A WhatsApp webhook needs an entry list")
    events = []
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else []:
            value = change.get("value") if isinstance(change, dict) else None
            found = value.get("calls") if isinstance(value, dict) else None
            for call in found if isinstance(found, list) else []:
                if isinstance(call, dict) and isinstance(call.get("id"), str):
                    events.append((call["id"], str(call.get("event"))))
    return events


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


# -- WhatsApp sessions ---------------------------------------------------------------------


async def _start_whatsapp_session(
    state: ControlState,
    db: AsyncSession,
    organization: Organization,
    agent: Agent,
    raw: bytes,
    signature: str | None,
    *,
    requested_at: float,
) -> tuple[LiveSession, asyncio.Future[Response]]:
    """A session on an instance from the agent's pool, started by the call's first webhook.

    No ``/bot`` carries it: the session's task hands the webhook to the instance, whose
    runtime answers the call and runs the bot; the one-session instance exits when that
    session ends, and the supervisor records the end state the runtime logged. An instance
    that does not take the call ends the session at once. Returns the session and the
    instance's answer to come.
    """
    target = await agent_target(state, db, organization, agent)
    answered: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

    async def connect(live: LiveSession) -> str | None:
        try:
            response = await _forward(state, live, raw, signature)
        except Exception as exc:
            answered.set_exception(exc)
            return NOT_STARTED
        answered.set_result(response)
        return None if response.status_code < 400 else NOT_STARTED

    # A full pool: AtCapacity, a 429 to Meta, and the call recorded as a refused session.
    live = await place(
        state, target, connect=connect, transport="whatsapp", requested_at=requested_at
    )
    return live, answered


async def _answer(live: LiveSession, answered: asyncio.Future[Response]) -> Response:
    """The instance's answer to the call's first webhook, once its session's task has it."""
    assert live.task is not None
    await asyncio.wait({answered, live.task}, return_when=asyncio.FIRST_COMPLETED)
    if not answered.done():
        raise ServiceUnavailable(f"Session {live.id} ended before its instance took the call")
    return answered.result()


async def _forward(
    state: ControlState, live: LiveSession, raw: bytes, signature: str | None
) -> Response:
    """``raw`` with Meta's signature to the session's instance at ``/whatsapp``; its answer."""
    headers = {
        "content-type": "application/json",
        INSTANCE_TOKEN_HEADER: live.handle.token,
        SESSION_ID_HEADER: live.id,
    }
    if signature:
        headers[HUB_SIGNATURE_HEADER] = signature
    try:
        resp = await state.proxy_http.post(
            f"{live.handle.address}/whatsapp", content=raw, headers=headers, timeout=FORWARD_TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(f"The instance of session {live.id} is unreachable") from exc
    return Response(
        resp.content, status_code=resp.status_code, media_type=resp.headers.get("content-type")
    )
