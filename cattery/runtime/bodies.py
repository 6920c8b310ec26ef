"""Reading session bodies off the wire: JSON objects on ``/bot``, base64 JSON on ``/ws``."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import Request
from loguru import logger

from cattery import jsonlimits
from cattery.errors import InvalidRequest


async def json_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what it is instead."""
    return parse_json_object(await request.body(), empty_ok=empty_ok)


def parse_json_object(raw: bytes, *, empty_ok: bool = False) -> dict[str, Any]:
    """``raw`` as a JSON object (``{}`` for an empty body when ``empty_ok``), or a 400."""
    if empty_ok and not raw.strip():
        return {}
    try:
        data = jsonlimits.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"Body must be a JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"Body must be a JSON object, not {type(data).__name__}")
    return data


def decode_ws_body(value: str | None) -> Any:
    """``?body=`` is base64 of JSON; a bad value is logged and ignored, as the image does."""
    if not value:
        return None
    try:
        return jsonlimits.loads(base64.b64decode(value, validate=False).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        logger.error(f"Failed to decode body parameter: {exc}")
        return None


def encode_ws_body(body: Any) -> str:
    return base64.b64encode(json.dumps(body).encode()).decode()
