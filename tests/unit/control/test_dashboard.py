"""The dashboard's login, cookie and forms, on the app in this process (no server, no bot).

A page without a login goes to the login form; only the admin token or a private key logs
in; the cookie is HttpOnly, SameSite and Secure; every POST needs the login's CSRF token;
key and secret forms change what the API reports; values never appear on a page.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cattery.store import repositories as repo
from cattery.store.repositories.latency import LatencyUpdate
from tests.support.asgi import app_client, in_process_settings
from tests.support.control import ADMIN_TOKEN, ORG

DASH = "/dashboard"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(in_process_settings(tmp_path / "state")) as c:
        yield c


async def make_key(client: httpx.AsyncClient, kind: str, name: str = "k") -> dict:
    resp = await client.post(
        f"/v1/organizations/{ORG}/apiKeys", json={"name": name, "type": kind}, headers=ADMIN
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def log_in(client: httpx.AsyncClient, token: str, next: str = DASH + "/") -> httpx.Response:
    return await client.post(DASH + "/login", data={"token": token, "next": next})


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def test_a_page_without_login_goes_to_the_login_form(client) -> None:
    resp = await client.get(DASH + "/sessions?state=completed")
    assert resp.status_code == 303
    assert resp.headers["location"] == f"{DASH}/login?next={DASH}/sessions%3Fstate%3Dcompleted"
    form = await client.get(resp.headers["location"])
    assert form.status_code == 200 and 'name="token"' in form.text
    # a script's request gets a 401 in the API's shape, not a page
    talk = await client.post(DASH + "/agents/x/talk", json={})
    assert talk.status_code == 401 and set(talk.json()) == {"code", "error"}
    assert (await client.get(DASH)).headers["location"] == DASH + "/"


async def test_a_wrong_token_and_a_public_key_are_refused(client) -> None:
    for token in ("sk_wrong", "", (await make_key(client, "public"))["key"]):
        resp = await log_in(client, token)
        assert resp.status_code == 401, token
        assert "not the admin token or a private key" in resp.text
        assert "set-cookie" not in resp.headers
    assert (await client.get(DASH + "/")).status_code == 303


async def test_the_admin_token_logs_in_with_a_strict_cookie_and_out_again(client) -> None:
    resp = await log_in(client, ADMIN_TOKEN, next=DASH + "/keys")
    assert resp.status_code == 303 and resp.headers["location"] == DASH + "/keys"
    cookie = resp.headers["set-cookie"]
    attributes = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite=lax", "path=/dashboard/"} <= attributes, cookie
    assert ADMIN_TOKEN not in cookie
    # a login never sends anyone elsewhere
    assert (await log_in(client, ADMIN_TOKEN, next="https://example.com/")).headers[
        "location"
    ] == DASH + "/"

    for path in ("/", "/sessions", "/keys", "/secrets", "/builds"):
        page = await client.get(DASH + path)
        assert page.status_code == 200, path
        assert ADMIN_TOKEN not in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    page = await client.get(DASH + "/")
    refused = await client.post(DASH + "/logout")
    assert refused.status_code == 403
    out = await client.post(DASH + "/logout", data={"csrf_token": csrf_of(page)})
    assert out.status_code == 303 and out.headers["location"] == DASH + "/login"
    assert (await client.get(DASH + "/")).status_code == 303


async def test_forms_need_the_logins_csrf_token(client) -> None:
    await log_in(client, ADMIN_TOKEN)
    page = await client.get(DASH + "/keys")
    token = csrf_of(page)
    for data in ({"name": "app", "type": "public"}, {"name": "app", "csrf_token": "forged"}):
        resp = await client.post(DASH + "/keys", data=data)
        assert resp.status_code == 403 and resp.json()["code"] == "FORBIDDEN", resp.text
    resp = await client.post(DASH + "/talk", json={}, headers={"x-csrf-token": "forged"})
    assert resp.status_code in (403, 404)
    resp = await client.post(DASH + "/agents/nobody/talk", json={})
    assert resp.status_code == 403
    listed = await client.get(f"/v1/organizations/{ORG}/apiKeys", headers=ADMIN)
    assert listed.json()["total"] == 0
    # another login's token is not this one's
    async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as other:
        await log_in(other, ADMIN_TOKEN)
        assert csrf_of(await other.get(DASH + "/keys")) != token
        resp = await other.post(DASH + "/keys", data={"name": "x", "csrf_token": token})
        assert resp.status_code == 403


async def test_keys_are_created_and_revoked_through_the_forms(client) -> None:
    await log_in(client, ADMIN_TOKEN)
    token = csrf_of(await client.get(DASH + "/keys"))
    made = await client.post(
        DASH + "/keys", data={"name": "phone-app", "type": "public", "csrf_token": token}
    )
    assert made.status_code == 200
    raw = re.search(r'<code id="new-key"[^>]*>([^<]+)</code>', made.text).group(1)
    (listed,) = (await client.get(f"/v1/organizations/{ORG}/apiKeys", headers=ADMIN)).json()[
        "public"
    ]
    assert listed["key"] == raw and listed["metadata"]["name"] == "phone-app"
    key_id = listed["id"]
    start = await client.post("/v1/public/nobody/start", headers={"Authorization": f"Bearer {raw}"})
    assert start.status_code == 404  # the key is good; the agent isn't there

    revoked = await client.post(f"{DASH}/keys/{key_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    start = await client.post("/v1/public/nobody/start", headers={"Authorization": f"Bearer {raw}"})
    assert start.status_code == 401
    assert "revoked" in (await client.get(DASH + "/keys")).text


async def test_a_private_key_logs_in_until_it_is_revoked(client) -> None:
    private = await make_key(client, "private", "ops")
    assert (await log_in(client, private["key"])).status_code == 303
    page = await client.get(DASH + "/keys")
    assert page.status_code == 200 and "(you)" in page.text
    resp = await client.delete(f"/v1/organizations/{ORG}/apiKeys/{private['id']}", headers=ADMIN)
    assert resp.status_code == 200
    assert (await client.get(DASH + "/keys")).status_code == 303


async def test_secrets_are_set_and_unset_and_never_shown(client) -> None:
    await log_in(client, ADMIN_TOKEN)
    token = csrf_of(await client.get(DASH + "/secrets"))
    for key, value in (("OPENAI_API_KEY", "sk-very-secret"), ("OTHER", "v2")):
        data = {"set": "voice", "key": key, "value": value, "csrf_token": token}
        assert (await client.post(DASH + "/secrets", data=data)).status_code == 303
    bad = await client.post(
        DASH + "/secrets", data={"set": "voice", "key": "no spaces", "csrf_token": token}
    )
    assert bad.status_code == 400 and set(bad.json()) == {"code", "error"}
    page = await client.get(DASH + "/secrets")
    assert "OPENAI_API_KEY" in page.text and "sk-very-secret" not in page.text
    api = await client.get(f"/v1/organizations/{ORG}/secrets/voice", headers=ADMIN)
    assert [s["fieldName"] for s in api.json()["secrets"]] == ["OPENAI_API_KEY", "OTHER"]

    gone = await client.post(f"{DASH}/secrets/voice/OTHER/unset", data={"csrf_token": token})
    assert gone.status_code == 303
    api = await client.get(f"/v1/organizations/{ORG}/secrets/voice", headers=ADMIN)
    assert [s["fieldName"] for s in api.json()["secrets"]] == ["OPENAI_API_KEY"]


async def test_missing_things_are_404s_in_the_apis_shape(client) -> None:
    await log_in(client, ADMIN_TOKEN)
    for path in ("/agents/nobody", "/sessions/nobody", "/sessions/nobody/logs"):
        resp = await client.get(DASH + path)
        assert resp.status_code == 404 and set(resp.json()) == {"code", "error"}, path
    assert (await client.get(DASH + "/static/cattery.css")).status_code == 200
    assert (await client.get(DASH + "/static/talk.js")).status_code == 200


async def test_a_sessions_page_shows_its_timeline_charts_and_latency(client) -> None:
    """A session as the recorder leaves it: started warm, sampled, with voice latency."""
    state = client.control
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with state.sessionmaker.begin() as db:
        org = await repo.get_organization_by_name(db, ORG)
        agent = await repo.create_agent(db, org.id, "voice", "local")
        dep = await repo.create_deployment(
            db, agent.id, image="/srv/voice:latest", region="local", min_agents=1, max_agents=3
        )
        await repo.set_active_deployment(db, agent, dep.id)
        session = await repo.create_session(
            db,
            organization_id=org.id,
            agent_id=agent.id,
            deployment_id=dep.id,
            instance_id="inst_test",
            transport="webrtc",
        )
        session.created_at = started
        await repo.mark_bot_started(
            db,
            session.id,
            bot_start_seconds=0.0123,
            cold_start=False,
            at=started + timedelta(milliseconds=12),
        )
        for i in range(4):
            await repo.add_resource_sample(
                db, session.id, 100.0 + i, 40_000_000 + i, t=started + timedelta(seconds=i)
            )
        await repo.add_latency(
            db,
            session.id,
            LatencyUpdate(first_bot_speech_seconds=0.8, user_bot_latencies=[0.5, 0.7, 0.6]),
        )
        await repo.end_session(db, session.id, "completed", at=started + timedelta(seconds=5))
    await log_in(client, ADMIN_TOKEN)
    page = await client.get(f"{DASH}/sessions/{session.id}")
    assert page.status_code == 200
    text = page.text
    for step in ("requested", "instance", "bot() running", "first bot speech", "ended"):
        assert f'data-step="{step}"' in text, step
    assert "12 ms after the request" in text and "800 ms after the client connected" in text
    assert "inst_test · warm instance" in text
    for chart in ("CPU", "Memory", "User → bot latency"):
        assert f'data-chart="{chart}"' in text, chart
    assert "3 turns, p50 600 ms" in text
    assert "data-stream" not in text  # ended: no live tail to follow

    listed = await client.get(f"{DASH}/sessions?state=completed&agent=voice")
    assert session.id[:8] in listed.text and "12 ms" in listed.text and "warm" in listed.text
    assert session.id[:8] not in (await client.get(f"{DASH}/sessions?state=active")).text
    agent_page = await client.get(f"{DASH}/agents/voice")
    assert "/srv/voice:latest" in agent_page.text and session.id[:8] in agent_page.text


async def test_builds_and_their_logs_are_shown(client) -> None:
    async with client.control.sessionmaker.begin() as db:
        org = await repo.get_organization_by_name(db, ORG)
        build = await repo.create_build(
            db,
            org.id,
            build_id="0b1d0000-0000-4000-8000-000000000001",
            region="local",
            context_hash="c0ffee",
            dockerfile_path="Dockerfile",
            context_size_bytes=2048,
            status="failed",
        )
        await repo.update_build(db, build, error_message="step 3 failed: no such file")
        now = datetime.now(UTC)
        await repo.append_build_log_lines(db, build.id, [(now, "STEP 1/3"), (now, "boom")])
    await log_in(client, ADMIN_TOKEN)
    page = await client.get(DASH + "/builds")
    assert page.status_code == 200 and build.id[:8] in page.text and "no such file" in page.text
    one = await client.get(f"{DASH}/builds/{build.id}")
    assert one.status_code == 200 and "STEP 1/3\nboom" in one.text
    assert (await client.get(f"{DASH}/builds/nobody")).status_code == 404
