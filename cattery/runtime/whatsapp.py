"""``POST /whatsapp``: WhatsApp Business call webhooks answered with SmallWebRTC sessions."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from fastapi import FastAPI, Header, Request
from loguru import logger
from pipecat.transports.whatsapp.api import WhatsAppWebhookRequest
from pipecat.transports.whatsapp.client import WhatsAppClient
from pipecatcloud.agent import SmallWebRTCSessionArguments

from cattery.errors import InvalidRequest, Unauthorized
from cattery.runtime.options import WhatsAppOptions
from cattery.runtime.sessions import SessionRunner
from cattery.runtime.system import add_lifespan_to_app
from cattery.runtime.webrtc import WebRTCSessions

BUSINESS_ACCOUNT = "whatsapp_business_account"


def signature_matches(secret: str, raw: bytes, header: str | None) -> bool:
    """Meta signs the raw body with the app secret: ``sha256=<hex hmac>``."""
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256="), expected)


def add_whatsapp_routes(
    app: FastAPI, runner: SessionRunner, webrtc: WebRTCSessions, options: WhatsAppOptions
) -> None:
    client: WhatsAppClient | None = None

    @asynccontextmanager
    async def whatsapp_lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal client
        async with aiohttp.ClientSession() as http:
            client = WhatsAppClient(
                whatsapp_token=options.token,
                phone_number_id=options.phone_number_id,
                whatsapp_secret=options.app_secret,
                session=http,
            )
            try:
                yield
            finally:
                try:
                    await client.terminate_all_calls()
                except Exception as exc:
                    logger.error(f"Error ending WhatsApp calls: {exc!r}")

    add_lifespan_to_app(whatsapp_lifespan)

    @app.post("/whatsapp")
    async def whatsapp(
        request: Request,
        x_hub_signature_256: str | None = Header(None),
        x_daily_session_id: str | None = Header(None),
    ) -> dict[str, str]:
        raw = await request.body()
        # Meta signs every delivery: nothing unsigned is parsed, let alone acted on.
        if not signature_matches(options.app_secret, raw, x_hub_signature_256):
            raise Unauthorized("Missing or invalid X-Hub-Signature-256")
        try:
            payload = WhatsAppWebhookRequest.model_validate_json(raw)
        except ValueError as exc:
            raise InvalidRequest(f"Invalid WhatsApp webhook: {exc}") from exc
        if payload.object != BUSINESS_ACCOUNT:
            raise InvalidRequest(f"Invalid object type: {payload.object!r}")
        if client is None:
            raise InvalidRequest("WhatsApp client is not running")

        async def on_connection(connection: Any, call: Any = None) -> None:
            args = SmallWebRTCSessionArguments(
                session_id=x_daily_session_id, webrtc_connection=connection, body=None
            )
            runner.start(args)

        client.update_ice_servers(await webrtc.ice_servers())
        try:
            await client.handle_webhook_request(
                payload, on_connection, raw_body=raw, sha256_signature=x_hub_signature_256
            )
        except ValueError as exc:
            raise InvalidRequest(f"Invalid request: {exc}") from exc
        return {"status": "success", "message": "Webhook processed successfully"}
