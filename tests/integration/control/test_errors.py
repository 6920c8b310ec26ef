"""Bad input: every refusal is a 4xx whose body is exactly ``{"code", "error"}``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from tests.integration.control.helpers import (
    SESSION_NOT_READY,
    add_organization,
    get_session,
    refused,
    start,
    start_session,
    stop_session,
    wait_ended,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS

PROBE = TEST_BOTS / "probe"
FOREVER = {"action": "forever"}


def request(
    control: ControlPlane, method: str, path: str, *, auth: str | None, **kwargs: object
) -> httpx.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    with httpx.Client(base_url=control.url, timeout=60) as c:
        return c.request(method, path, headers=headers, **kwargs)


def same_refusal(a: httpx.Response, b: httpx.Response, a_name: str, b_name: str) -> None:
    """Two 404s that differ only by the name asked for: neither hints that one exists."""
    first, second = refused(a, 404), refused(b, 404)
    assert first["code"] == second["code"]
    assert first["error"].replace(a_name, "NAME") == second["error"].replace(b_name, "NAME")


def test_keys_and_organizations(control: ControlPlane) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 2})
    key = control.public_key()
    live = start_session(control, key, "probe", FOREVER)
    routes = [
        ("GET", "/v1/agents"),
        ("GET", f"/v1/organizations/{ORG}/services/probe"),
        ("GET", "/v1/organizations"),
        ("GET", f"/v1/organizations/{ORG}/secrets"),
        ("DELETE", f"/v1/agents/probe/sessions/{live}"),
        ("POST", "/v1/public/probe/start"),
        ("GET", f"/v1/public/probe/sessions/{live}/anything"),
    ]

    # Missing, malformed and wrong keys: 401 with code "401", on every kind of route.
    for auth in (None, "", "Basic dXNlcjpwdw==", "Bearer", "Bearer pk_wrong", "Bearer sk_no"):
        for method, path in routes:
            refused(request(control, method, path, auth=auth), 401, "401")
    with control.client() as c:
        revoked = c.post(f"/v1/organizations/{ORG}/apiKeys", json={"name": "old"}).json()
        assert c.delete(f"/v1/organizations/{ORG}/apiKeys/{revoked['id']}").status_code == 200
    refused(start(control, revoked["key"], "probe", {}), 401, "401")
    refused(start(control, f"{key}x", "probe", {}), 401, "401")

    # A public key opens the public routes only.
    private_routes = [
        *routes[:5],
        ("GET", "/v1/users"),
        ("POST", f"/v1/organizations/{ORG}/apiKeys"),
        ("POST", f"/v1/organizations/{ORG}/services"),
    ]
    for method, path in private_routes:
        refused(request(control, method, path, auth=f"Bearer {key}", json={}), 403)

    # Another organization's agents and sessions do not exist for it, nor it for us.
    other = add_organization(control, "other-org")
    theirs = f"Bearer {other.private_key}"
    same_refusal(
        start(control, other.public_key, "probe", {}),
        start(control, other.public_key, "ghost", {}),
        "probe",
        "ghost",
    )
    for suffix in ("", "/deployments", "/sessions", f"/sessions/{live}", "/logs"):
        same_refusal(
            request(control, "GET", f"/v1/agents/probe{suffix}", auth=theirs),
            request(control, "GET", f"/v1/agents/ghost{suffix}", auth=theirs),
            "probe",
            "ghost",
        )
    same_refusal(
        request(control, "DELETE", f"/v1/agents/probe/sessions/{live}", auth=theirs),
        request(control, "DELETE", f"/v1/agents/ghost/sessions/{live}", auth=theirs),
        "probe",
        "ghost",
    )
    same_refusal(
        request(control, "DELETE", "/v1/agents/probe", auth=theirs),
        request(control, "DELETE", "/v1/agents/ghost", auth=theirs),
        "probe",
        "ghost",
    )
    same_refusal(
        request(control, "GET", f"/v1/organizations/{ORG}/services", auth=theirs),
        request(control, "GET", "/v1/organizations/nobody/services", auth=theirs),
        ORG,
        "nobody",
    )
    with control.client() as c:
        same_refusal(
            c.get("/v1/organizations/other-org/services"),
            c.get("/v1/organizations/nobody/services"),
            "other-org",
            "nobody",
        )
    # Even with an agent of the same name, our session is not one of theirs.
    deployed = request(
        control,
        "POST",
        "/v1/organizations/other-org/services",
        auth=theirs,
        json={"serviceName": "probe", "image": f"{PROBE}:latest"},
    )
    assert deployed.status_code == 200, deployed.text
    random_id = str(uuid.uuid4())
    for method in ("GET", "DELETE"):
        same_refusal(
            request(control, method, f"/v1/agents/probe/sessions/{live}", auth=theirs),
            request(control, method, f"/v1/agents/probe/sessions/{random_id}", auth=theirs),
            live,
            random_id,
        )
    listed = request(control, "GET", "/v1/agents/probe/sessions", auth=theirs).json()
    assert listed["sessions"] == []
    logs = request(control, "GET", f"/v1/agents/probe/logs?sessionId={live}", auth=theirs)
    assert logs.json()["logs"] == []
    for auth in (f"Bearer {other.public_key}", f"Bearer {key}"):
        agent = "probe" if auth.endswith(other.public_key) else "someone-else"
        for method in ("GET", "POST", "DELETE"):
            body = refused(
                request(control, method, f"/v1/public/{agent}/sessions/{live}/x", auth=auth),
                404,
            )
            assert body["error"] == SESSION_NOT_READY

    # None of that touched our session.
    assert get_session(control, "probe", live)["endedAt"] is None
    stop_session(control, "probe", live)
    assert wait_ended(control, "probe", live)["endState"] == "terminated"


def test_names_bodies_and_sessions(control: ControlPlane, tmp_path: Path) -> None:
    services = f"/v1/organizations/{ORG}/services"
    image = f"{PROBE}:latest"
    with control.client() as c:
        # Agent names: [a-z0-9-], at most 63 characters, on every route that takes one.
        for bad in ("Probe", "under_score", "has space", "dot.name", "é", "probe\n", "a" * 64, ""):
            body = {"serviceName": bad, "image": image}
            refused(c.post(services, json=body), 400, "GENERIC_BAD_REQUEST")
            refused(c.put(services, json=body), 400)
            refused(c.post("/v1/agents", json=body), 400)
        assert c.post(services, json={"serviceName": "a" * 63, "image": image}).status_code == 200
        assert c.post("/v1/agents", json={"serviceName": "ok-9", "image": image}).status_code == 200

        # Secret keys: [A-Za-z0-9_-], at most 64 characters, in both request forms.
        secrets = f"/v1/organizations/{ORG}/secrets/keys"
        for bad in ("has space", "dot.key", "é", "a=b", "KEY\n", "k" * 65, ""):
            refused(c.put(secrets, json={"secretKey": bad, "secretValue": "v"}), 400)
            form = {"secrets": [{"secretKey": "GOOD", "secretValue": "v"}, {"key": bad}]}
            refused(c.put("/v1/secrets/keys", json=form), 400)
        refused(c.get(secrets), 404)  # nothing of the refused requests was stored
        for good in ("k" * 64, "Ok_key-9"):
            assert c.put(secrets, json={"secretKey": good, "secretValue": "v"}).status_code == 200

        # A folder without bot.py, a missing folder, a relative path: 400 naming the problem.
        no_bot = tmp_path / "no-bot"
        no_bot.mkdir()
        (no_bot / "main.py").write_text("async def bot(args): pass\n")
        error = refused(c.post(services, json={"serviceName": "x", "image": f"{no_bot}:v1"}), 400)
        assert str(no_bot) in error["error"] and "no bot.py" in error["error"]
        missing = f"{TEST_BOTS}/missing"
        error = refused(c.post(services, json={"serviceName": "x", "image": f"{missing}:v1"}), 400)
        assert missing in error["error"] and "does not exist" in error["error"]
        for image_ref in ("bots/probe:latest", "probe"):
            error = refused(c.post(services, json={"serviceName": "x", "image": image_ref}), 400)
            assert image_ref in error["error"] and "bot.py" in error["error"]
        refused(c.get(f"{services}/x"), 404)  # nothing was created

        # Other malformed private requests.
        refused(c.post(services, content=b"{not json"), 400)
        for scaling in ({"minAgents": 2, "maxAgents": 1}, {"minAgents": -1}, {"maxAgents": 0}):
            body = {"serviceName": "y", "image": image, "autoScaling": scaling}
            refused(c.post(services, json=body), 400)
        refused(c.get(f"{services}/y"), 404)
        refused(c.get(f"{services}/ok-9/sessions?endState=exploded"), 400)
        refused(c.get("/v1/no-such-route"), 404)
        refused(c.patch("/v1/agents"), 405)

    control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 1})
    key = control.public_key()
    with control.client(key) as c:
        # Start bodies: at most 1 MB, a JSON object; the agent must exist.
        big = json.dumps({"body": {"pad": "x" * 1_000_001}})
        refused(c.post("/v1/public/probe/start", content=big), 413, "PAYLOAD_TOO_LARGE")
        for raw in ("[1, 2]", '"hi"', "42", "null", "{not json"):
            refused(c.post("/v1/public/probe/start", content=raw), 400)
        refused(c.post("/v1/public/probe/start", json={"createDailyRoom": "maybe"}), 400)
        refused(c.post("/v1/public/nobody-here/start", json={}), 404, "NOT_FOUND")

        # The Session API knows only live sessions of the caller's agent.
        for session_id in (str(uuid.uuid4()), "not-a-uuid"):
            body = refused(c.get(f"/v1/public/probe/sessions/{session_id}/x"), 404)
            assert body["error"] == SESSION_NOT_READY
    ended = start_session(control, key, "probe", {})
    assert wait_ended(control, "probe", ended)["endState"] == "completed"
    with control.client(key) as c:
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            resp = c.request(method, f"/v1/public/probe/sessions/{ended}/messages")
            assert refused(resp, 404)["error"] == SESSION_NOT_READY
        assert c.head(f"/v1/public/probe/sessions/{ended}/messages").status_code == 404
    with control.client() as c:
        sessions = c.get(f"{services}/probe/sessions").json()["sessions"]
    assert [s["sessionId"] for s in sessions] == [ended]  # the refused starts left nothing
