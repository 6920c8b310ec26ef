"""The public API remembers keys and agents (``lookups.py``); a change is seen at once."""

from __future__ import annotations

from tests.integration.control.helpers import (
    get_session,
    refused,
    start,
    start_session,
    stop_session,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS

PROBE = TEST_BOTS / "probe"
FOREVER = {"action": "forever"}


def test_revoked_key_is_refused_on_the_next_request(control: ControlPlane) -> None:
    control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 2})
    with control.client() as c:
        made = c.post(f"/v1/organizations/{ORG}/apiKeys", json={"name": "app"}).json()
    key = made["key"]
    live = start_session(control, key, "probe", FOREVER)
    proxied = f"/v1/public/probe/sessions/{live}/anything"
    with control.client(key) as c:
        assert c.get(proxied).status_code == 404  # the bot has no such route: the key passed
    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/apiKeys/{made['id']}").status_code == 200
    refused(start(control, key, "probe", FOREVER), 401, "401")
    with control.client(key) as c:
        refused(c.get(proxied), 401, "401")
    stop_session(control, "probe", live)


def test_redeploy_and_delete_are_seen_by_the_next_start(control: ControlPlane) -> None:
    first = control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 2})
    key = control.public_key()
    one = start_session(control, key, "probe", FOREVER)
    assert get_session(control, "probe", one)["deploymentId"] == first["deployment"]["id"]

    second = control.deploy("probe", PROBE, autoScaling={"minAgents": 0, "maxAgents": 2})
    assert second["deployment"]["id"] != first["deployment"]["id"]
    two = start_session(control, key, "probe", FOREVER)
    assert get_session(control, "probe", two)["deploymentId"] == second["deployment"]["id"]

    with control.client() as c:
        assert c.delete(f"/v1/organizations/{ORG}/services/probe").status_code == 200
    refused(start(control, key, "probe", FOREVER), 404)
