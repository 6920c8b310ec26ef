"""Daily rooms for sessions: the control plane's side of ``createDailyRoom`` and dial-in."""

from __future__ import annotations

from typing import Any

from cattery.control.state import ControlState
from cattery.control.supervisor import DailyRoom
from cattery.errors import InvalidRequest
from cattery.integrations.daily import DailyRestClient, create_session_room

MISSING_KEY = (
    "createDailyRoom needs a Daily API key, and none is configured: set DAILY_API_KEY "
    "(or CATTERY_DAILY__API_KEY) where cattery serve runs"
)


def daily_client(state: ControlState) -> DailyRestClient:
    """Daily's REST API with the configured key, or a 400 saying the key is missing."""
    daily = state.settings.daily
    key = daily.api_key.get_secret_value() if daily.api_key else ""
    if not key:
        raise InvalidRequest(MISSING_KEY, code="DAILY_API_KEY_MISSING")
    return DailyRestClient(key, daily.api_url, state.proxy_http)


async def open_session_room(
    client: DailyRestClient,
    *,
    max_session_seconds: int,
    room_properties: dict[str, Any] | None,
    token_properties: dict[str, Any] | None,
) -> DailyRoom:
    """The room of a session about to run, expiring with its duration cap."""
    room = await create_session_room(
        client,
        max_session_seconds=max_session_seconds,
        room_properties=room_properties,
        client_token_properties=token_properties,
    )
    return DailyRoom(room.url, room.bot_token, room.client_token or "")
