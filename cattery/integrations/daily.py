"""Daily's REST API: the rooms and meeting tokens a Daily session needs.

Pipecat ships ``DailyRESTHelper``, but it fills in room properties nobody asked for, drops
meeting-token properties its model does not list, and reports every failure as a bare
``Exception``; a platform that passes its callers' properties through to Daily and answers
with Daily's own refusals needs neither. The two calls here are Daily's documented
``POST /rooms`` and ``POST /meeting-tokens``, made with the control plane's HTTP client.

A session's room expires with the session: the room and both tokens get ``exp`` = now + the
agent's max session duration (or the caller's earlier ``exp``), and Daily ejects whoever is
left when the room expires. The bot's token is an owner token; the client's carries the
caller's ``dailyMeetingTokenProperties``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from cattery.errors import CatteryError, InvalidRequest

DAILY_TIMEOUT = httpx.Timeout(20.0, connect=5.0)


class DailyApiError(CatteryError):
    """Daily could not be reached, or refused a request that was not the caller's fault."""

    status_code = 502
    code = "DAILY_API_ERROR"
    default_message = "Daily's REST API failed"


class DailyRequestRefused(InvalidRequest):
    """Daily refused the properties the caller asked for (its 400)."""

    code = "DAILY_BAD_REQUEST"


@dataclass(frozen=True)
class DailyRoomInfo:
    name: str
    url: str


@dataclass(frozen=True)
class SessionRoom:
    """A session's Daily room: what the bot joins with, and the client's token if any."""

    url: str
    bot_token: str = field(repr=False)
    client_token: str | None = field(default=None, repr=False)


class DailyRestClient:
    """Rooms and meeting tokens through Daily's REST API at ``api_url`` with ``api_key``.

    ``http`` belongs to the caller (the control plane's outgoing client).
    """

    def __init__(self, api_key: str, api_url: str, http: httpx.AsyncClient) -> None:
        self._api_key = api_key
        self._api_url = api_url.rstrip("/")
        self._http = http

    async def create_room(
        self, properties: Mapping[str, Any], *, privacy: str = "private"
    ) -> DailyRoomInfo:
        data = await self._post("/rooms", {"privacy": privacy, "properties": dict(properties)})
        name, url = data.get("name"), data.get("url")
        if not isinstance(name, str) or not isinstance(url, str) or not url:
            raise DailyApiError("Daily created a room but its answer has no name and url")
        return DailyRoomInfo(name=name, url=url)

    async def create_meeting_token(self, properties: Mapping[str, Any]) -> str:
        data = await self._post("/meeting-tokens", {"properties": dict(properties)})
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise DailyApiError("Daily's meeting-token answer has no token")
        return token

    async def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        what = f"POST {path}"
        try:
            resp = await self._http.post(
                self._api_url + path,
                json=payload,
                headers={"Authorization": f"Bearer {self._api_key}"},
                timeout=DAILY_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            raise DailyApiError(f"Daily's REST API is unreachable ({what}): {exc!r}") from exc
        if resp.status_code != 200:
            detail = _describe(resp)
            if resp.status_code == 400:
                raise DailyRequestRefused(f"Daily refused {what}: {detail}")
            raise DailyApiError(f"Daily answered {what} with {resp.status_code}: {detail}")
        try:
            data = resp.json()
        except ValueError as exc:
            raise DailyApiError(f"Daily answered {what} with something not JSON") from exc
        if not isinstance(data, dict):
            raise DailyApiError(f"Daily answered {what} with something not a JSON object")
        return data


def _describe(resp: httpx.Response) -> str:
    """Daily's error body ``{"error": ..., "info": ...}`` as one line, else its first bytes."""
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200] or "(no body)"
    if isinstance(data, dict) and ("error" in data or "info" in data):
        return ": ".join(str(data[k]) for k in ("error", "info") if data.get(k))
    return str(data)[:200]


def _expiry(given: Any, limit: int, what: str) -> int:
    """The earlier of the caller's ``exp`` (if any) and the session's end."""
    if given is None:
        return limit
    if isinstance(given, bool) or not isinstance(given, int | float):
        raise InvalidRequest(f"{what}.exp must be a Unix timestamp (a number)")
    return min(int(given), limit)


def _properties(given: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise InvalidRequest(f"{what} must be a JSON object")
    return dict(given)


async def create_session_room(
    client: DailyRestClient,
    *,
    max_session_seconds: int,
    room_properties: Mapping[str, Any] | None = None,
    client_token_properties: Mapping[str, Any] | None = None,
    client_token: bool = True,
    clock: Callable[[], float] = time.time,
) -> SessionRoom:
    """A private room for one session, the bot's owner token and (if asked) the client's.

    ``room_properties`` go to Daily as given, with ``exp`` capped at the session's end and
    ``eject_at_room_exp`` on unless the caller says otherwise. The client's token gets
    ``client_token_properties`` for this room, expiring with it, not an owner unless those
    properties say ``is_owner``.
    """
    end = int(clock()) + max_session_seconds
    room_props = _properties(room_properties, "dailyRoomProperties")
    room_props["exp"] = exp = _expiry(room_props.get("exp"), end, "dailyRoomProperties")
    room_props.setdefault("eject_at_room_exp", True)
    client_props = _properties(client_token_properties, "dailyMeetingTokenProperties")
    client_props["exp"] = _expiry(client_props.get("exp"), exp, "dailyMeetingTokenProperties")
    client_props.setdefault("is_owner", False)
    room = await client.create_room(room_props)
    client_props["room_name"] = room.name
    bot_props = {"room_name": room.name, "is_owner": True, "exp": exp, "eject_at_token_exp": True}
    wanted = [bot_props, client_props] if client_token else [bot_props]
    tokens = await asyncio.gather(
        *(client.create_meeting_token(props) for props in wanted), return_exceptions=True
    )
    for token in tokens:
        if isinstance(token, BaseException):
            raise token
    return SessionRoom(
        url=room.url, bot_token=tokens[0], client_token=tokens[1] if client_token else None
    )
