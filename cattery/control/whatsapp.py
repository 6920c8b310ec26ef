"""WhatsApp Business calls: a call's first webhook starts its session, later ones reach it.

No ``/bot`` carries a call: the session's task hands the webhook (raw body and Meta's
signature) to the instance's ``/whatsapp`` route, whose runtime answers the call and runs
the bot; the one-session instance exits when that session ends, and the supervisor
records the end state the runtime logged. Later events of that call (``terminate``) go to
the same instance.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response

from cattery.contract import INSTANCE_TOKEN_HEADER, SESSION_ID_HEADER, EndState
from cattery.control.sessions import start, target
from cattery.control.state import ControlState
from cattery.control.supervisor import LiveSession
from cattery.errors import InvalidRequest, ServiceUnavailable
from cattery.store.models import Organization

BUSINESS_ACCOUNT = "whatsapp_business_account"
HUB_SIGNATURE_HEADER = "x-hub-signature-256"
FORWARD_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: the end state of a session whose instance never took its call
NOT_STARTED = EndState.ENDED_BEFORE_AGENT_START.value


def hub_signature_ok(secret: str, raw: bytes, header: str | None) -> bool:
    """Meta signs the raw body with the app secret: ``sha256=<hex hmac>``."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256=").encode(), expected.encode())


def call_events(data: dict[str, Any]) -> list[tuple[str, str]]:
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


async def handle_webhook(
    state: ControlState,
    org: Organization,
    name: str,
    events: list[tuple[str, str]],
    raw: bytes,
    signature: str | None,
    *,
    requested_at: float,
) -> Response:
    """A checked webhook's answer: a new call's session started (the instance's answer), a
    live call's event passed on to its instance, or anything else acknowledged."""
    calls = state.whatsapp_calls
    calls.prune(lambda session_id: state.supervisor.get(session_id) is not None)
    connect = next((call for call, event in events if event == "connect"), None)
    if connect is not None and calls.claim(connect):
        try:
            live, answered = await _start_call(
                state, org, name, raw, signature, requested_at=requested_at
            )
        except BaseException:
            calls.abandon(connect)
            raise
        calls.started(connect, live.id)
        return await _answer(live, answered)
    for call, _ in events:
        live = state.supervisor.get(calls.session_of(call) or "")
        if live is not None and call != connect:
            return await forward(state, live, raw, signature)
    return JSONResponse(
        {"status": "ignored", "message": "Neither a new call nor one of a live session"}
    )


async def _start_call(
    state: ControlState,
    org: Organization,
    name: str,
    raw: bytes,
    signature: str | None,
    *,
    requested_at: float,
) -> tuple[LiveSession, asyncio.Future[Response]]:
    """The call's session, and the instance's answer to its first webhook to come. An
    instance that does not take the call ends the session at once; a full pool is
    ``AtCapacity`` (a 429 to Meta) and the call is recorded as a refused session."""
    found = await target(state, org, name)
    answered: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

    async def connect(live: LiveSession) -> str | None:
        try:
            response = await forward(state, live, raw, signature)
        except Exception as exc:
            answered.set_exception(exc)
            return NOT_STARTED
        answered.set_result(response)
        return None if response.status_code < 400 else NOT_STARTED

    started = await start(
        state, found, connect=connect, transport="whatsapp", requested_at=requested_at
    )
    return started.live, answered


async def _answer(live: LiveSession, answered: asyncio.Future[Response]) -> Response:
    """The instance's answer to the call's first webhook, once its session's task has it."""
    assert live.task is not None
    await asyncio.wait({answered, live.task}, return_when=asyncio.FIRST_COMPLETED)
    if not answered.done():
        raise ServiceUnavailable(f"Session {live.id} ended before its instance took the call")
    return answered.result()


async def forward(
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
