"""The Daily REST client on a mock transport: expiry, token properties, and Daily's errors."""

from __future__ import annotations

import json

import httpx
import pytest

from cattery.errors import InvalidRequest
from cattery.integrations.daily import (
    DailyApiError,
    DailyRequestRefused,
    DailyRestClient,
    create_session_room,
)

NOW = 1_800_000_000.0


def daily_api(answer=None) -> tuple[DailyRestClient, list[tuple[str, dict]]]:
    """A client whose Daily records each call and answers as ``answer(path, body)`` says."""
    seen: list[tuple[str, dict]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, body))
        if answer is not None:
            return answer(request.url.path, body)
        if request.url.path.endswith("/rooms"):
            return httpx.Response(200, json={"name": "r1", "url": "https://x.daily.co/r1"})
        return httpx.Response(200, json={"token": f"tok-{len(seen)}"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return DailyRestClient("key", "https://api.example/v1/", http), seen


async def test_expiry_is_the_earlier_of_the_callers_and_the_sessions() -> None:
    client, seen = daily_api()
    room = await create_session_room(
        client,
        max_session_seconds=600,
        room_properties={"exp": NOW + 60, "eject_at_room_exp": False},
        client_token_properties={"exp": NOW + 6000, "is_owner": True, "user_name": "a"},
        clock=lambda: NOW,
    )
    assert room.url == "https://x.daily.co/r1"
    (_, room_body), bot, client_token = seen[0], seen[1][1], seen[2][1]
    assert room_body["properties"] == {"exp": int(NOW) + 60, "eject_at_room_exp": False}
    assert bot["properties"]["exp"] == int(NOW) + 60 and bot["properties"]["is_owner"] is True
    assert client_token["properties"] == {
        "exp": int(NOW) + 60,
        "is_owner": True,
        "user_name": "a",
        "room_name": "r1",
    }
    assert {room.bot_token, room.client_token} == {"tok-2", "tok-3"}


async def test_without_a_client_token_only_the_bot_gets_one() -> None:
    client, seen = daily_api()
    room = await create_session_room(client, max_session_seconds=60, client_token=False)
    assert room.client_token is None and len(seen) == 2


@pytest.mark.parametrize("exp", ["soon", True, []])
async def test_a_bad_exp_is_refused_before_daily_is_called(exp: object) -> None:
    client, seen = daily_api()
    with pytest.raises(InvalidRequest):
        await create_session_room(client, max_session_seconds=60, room_properties={"exp": exp})
    with pytest.raises(InvalidRequest):
        await create_session_room(
            client, max_session_seconds=60, client_token_properties={"exp": exp}
        )
    assert seen == []


async def test_dailys_errors() -> None:
    def refuse(path: str, body: dict) -> httpx.Response:
        return httpx.Response(400, json={"error": "invalid-request-error", "info": "bad exp"})

    client, _ = daily_api(refuse)
    with pytest.raises(DailyRequestRefused, match="bad exp"):
        await create_session_room(client, max_session_seconds=60)

    client, _ = daily_api(lambda path, body: httpx.Response(503, text="down"))
    with pytest.raises(DailyApiError, match="503: down"):
        await create_session_room(client, max_session_seconds=60)

    client, _ = daily_api(lambda path, body: httpx.Response(200, json={"no": "url"}))
    with pytest.raises(DailyApiError):
        await create_session_room(client, max_session_seconds=60)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(unreachable))
    with pytest.raises(DailyApiError, match="unreachable"):
        await DailyRestClient("key", "https://api.example/v1", http).create_room({})
