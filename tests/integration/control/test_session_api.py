"""The Session API: ``/v1/public/{agent}/sessions/{id}/{path}`` reaches the session's instance."""

from __future__ import annotations

from tests.integration.control.helpers import (
    SESSION_NOT_READY,
    refused,
    start_session,
    wait_ended,
)
from tests.support.control import ControlPlane
from tests.support.processes import EXAMPLES, TEST_BOTS
from tests.support.waiting import wait_for

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD")


def test_session_routes_example(control: ControlPlane) -> None:
    control.deploy("chat", EXAMPLES / "session-routes", autoScaling={"minAgents": 1})
    key = control.public_key()
    session_id = start_session(control, key, "chat", {"name": "Ada"})
    base = f"/v1/public/chat/sessions/{session_id}"
    with control.client(key) as c:
        # Until bot() runs, the example's own routes answer 409; then they serve.
        wait_for(lambda: c.get(f"{base}/messages").status_code == 200, what="the session")
        resp = c.post(f"{base}/messages", json={"text": "hi"})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"reply": "Hello Ada. You said: hi"}
        assert c.get(f"{base}/messages").json() == {
            "messages": [
                {"role": "user", "text": "hi"},
                {"role": "bot", "text": "Hello Ada. You said: hi"},
            ]
        }
        # Every method reaches the instance; the bot refuses those it has no route for.
        for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
            body = refused(c.request(method, f"{base}/messages"), 405)
            assert body["error"] != SESSION_NOT_READY
        assert refused(c.get(f"{base}/no/such/route"), 404)["error"] != SESSION_NOT_READY
        head = c.head(f"{base}/messages")
        assert head.status_code in (200, 405), head.status_code  # the bot's answer, either way

        assert c.post(f"{base}/end").json() == {"status": "ending"}
    assert wait_ended(control, "chat", session_id)["endState"] == "completed"
    with control.client(key) as c:
        assert refused(c.get(f"{base}/messages"), 404)["error"] == SESSION_NOT_READY


def test_every_method_and_header_reaches_the_instance(control: ControlPlane) -> None:
    control.deploy(
        "echo", TEST_BOTS / "session-echo", autoScaling={"minAgents": 1}, sessionCookies=True
    )
    key = control.public_key()
    session_id = start_session(control, key, "echo", {})
    path = f"/v1/public/echo/sessions/{session_id}/echo/some/path?x=1&y=two"
    with control.client(key) as c:
        for method in METHODS:
            payload = b"payload" if method in ("POST", "PUT", "PATCH") else b""
            sent = [
                ("X-Test", "yes"),
                ("X-Multi", "a"),
                ("X-Multi", "b"),
                ("X-Cattery-Instance-Token", "forged"),
                ("X-Daily-Session-Id", "forged"),
            ]
            c.cookies.clear()  # this caller sends none: any cookie would be the proxy's
            resp = c.request(method, path, headers=sent, content=payload)
            assert resp.status_code == 200, f"{method}: {resp.status_code} {resp.text}"
            assert resp.headers["x-echo-method"] == method
            cookies = resp.headers.get_list("set-cookie")
            assert [cookie.split(";")[0] for cookie in cookies] == ["first=1", "second=2"]
            if method == "HEAD":
                assert resp.content == b""
                continue
            assert resp.headers["content-encoding"] == "gzip"  # as the bot sent it
            seen = resp.json()
            assert seen["method"] == method
            assert (seen["path"], seen["query"]) == ("some/path", "x=1&y=two")
            assert seen["body"] == payload.decode()
            headers = seen["headers"]
            assert headers["x-test"] == "yes"
            assert seen["multi"] == ["a", "b"]
            assert "forged" not in headers.values()
            assert "cookie" not in headers  # the Set-Cookie of an earlier answer is not kept
            assert headers["x-daily-session-id"] == session_id
            assert "authorization" not in headers
            assert all(key not in value for value in headers.values())
            assert headers["host"] != f"127.0.0.1:{control.process.port}"
        # A body sent in chunks arrives whole.
        chunked = c.post(path, content=iter([b"chunk-1 ", b"chunk-2"]))
        assert chunked.status_code == 200, chunked.text
        assert chunked.json()["body"] == "chunk-1 chunk-2"
        assert c.post(f"/v1/public/echo/sessions/{session_id}/end").status_code == 200
    assert wait_ended(control, "echo", session_id)["endState"] == "completed"
