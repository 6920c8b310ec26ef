"""What the Session API passes on to an instance: paths, and the caller's headers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request

from cattery.contract import INSTANCE_TOKEN_HEADER, SESSION_ID_HEADER
from cattery.control.forwarding import _request_headers, session_path
from cattery.errors import NotFound


def _request(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def _live() -> SimpleNamespace:
    return SimpleNamespace(id="session-1", handle=SimpleNamespace(token="tok-1"))


def test_a_caller_s_own_headers_go_on_and_ours_are_set_by_us() -> None:
    sent = _request(
        [
            (b"x-app", b"kept"),
            (b"authorization", b"Bearer pk_caller"),
            (b"host", b"cattery"),
            (b"x-daily-session-id", b"forged"),
            (b"x-cattery-instance-token", b"forged"),
            (b"x-pcc-max-session-seconds", b"1"),
            (b"connection", b"keep-alive, x-hop"),
            (b"x-hop", b"one connection's"),
            (b"transfer-encoding", b"chunked"),
        ]
    )

    headers = dict(_request_headers(sent, _live()))  # type: ignore[arg-type]

    assert headers[b"x-app"] == b"kept"
    assert headers[INSTANCE_TOKEN_HEADER.encode()] == b"tok-1"
    assert headers[SESSION_ID_HEADER.encode()] == b"session-1"
    gone = {b"authorization", b"host", b"connection", b"x-hop", b"transfer-encoding"}
    assert not gone & set(headers)
    assert b"x-pcc-max-session-seconds" not in headers


@pytest.mark.parametrize(
    ("path", "expected"),
    [("api/offer", "api/offer"), ("a//b/./c", "a/b/c"), ("a/../b/", "b/"), ("", "")],
)
def test_paths_are_normalised_as_the_instance_sees_them(path: str, expected: str) -> None:
    assert session_path(path) == expected


@pytest.mark.parametrize("path", ["bot", "ws", "x/../readyz", "LIVEZ", "whatsapp/x"])
def test_the_runtime_s_own_routes_are_not_reachable(path: str) -> None:
    with pytest.raises(NotFound):
        session_path(path)
