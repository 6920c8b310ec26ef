"""Secret values reach the bot's environment and nothing else: no API response, no log line,
no plaintext in the database or anywhere under the state dir."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from tests.integration.control.helpers import (
    database_dump,
    logs,
    start_session,
    stop_session,
    wait_ended,
)
from tests.support.control import ORG, ControlPlane
from tests.support.processes import TEST_BOTS
from tests.support.waiting import wait_for

PROBE = TEST_BOTS / "probe"
SET = "probe-secrets"


def test_secret_values_reach_the_bot_and_nothing_else(
    control: ControlPlane, tmp_path: Path
) -> None:
    token, password = f"tok-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    values = (token, password)
    seen: list[tuple[str, str]] = []  # (what, text) of every response

    def record(what: str, resp: httpx.Response) -> dict:
        assert resp.status_code == 200, f"{what}: {resp.status_code} {resp.text}"
        seen.append((what, resp.text))
        return resp.json()

    with control.client() as c:
        # The CLI's form (one key per request) and the OpenAPI form (a list).
        record(
            "put (CLI form)",
            c.put(
                f"/v1/organizations/{ORG}/secrets/{SET}",
                json={
                    "name": SET,
                    "isImagePullSecret": False,
                    "secretKey": "PROBE_TOKEN",
                    "secretValue": token,
                },
            ),
        )
        record(
            "put (OpenAPI form)",
            c.put(
                f"/v1/secrets/{SET}",
                json={"secrets": [{"secretKey": "PROBE_PASSWORD", "secretValue": password}]},
            ),
        )
    deployed = control.deploy(
        "probe", PROBE, secretSet=SET, autoScaling={"minAgents": 1, "maxAgents": 2}
    )
    seen.append(("deploy", json.dumps(deployed)))
    key = control.public_key()

    report = tmp_path / "report.json"
    done = start_session(control, key, "probe", {"report_to": str(report)})
    got = json.loads(wait_for(lambda: report.exists() and report.read_text(), what="report"))
    assert got["env"] == {"PROBE_TOKEN": token, "PROBE_PASSWORD": password}
    assert wait_ended(control, "probe", done)["endState"] == "completed"
    live = start_session(control, key, "probe", {"action": "forever"})

    with control.client() as c:
        for base in ("/v1", f"/v1/organizations/{ORG}"):
            agents = "/v1/agents" if base == "/v1" else f"{base}/services"
            for path in (
                agents,
                f"{agents}/probe",
                f"{agents}/probe/deployments",
                f"{agents}/probe/sessions",
                f"{agents}/probe/sessions?endState=completed",
                f"{agents}/probe/sessions/{done}",
                f"{agents}/probe/sessions/{live}",
                f"{agents}/probe/logs?limit=10000",
                f"{agents}/probe/logs?sessionId={done}",
                f"{base}/secrets",
                f"{base}/secrets/{SET}",
                f"{base}/apiKeys",
                f"{base}/regions",
                f"{base}/properties",
                f"{base}/daily",
            ):
                record(path, c.get(path))
        for path in ("/v1/organizations", "/v1/users"):
            record(path, c.get(path))
        listed = c.get(f"/v1/secrets/{SET}").json()
    assert sorted(s["fieldName"] for s in listed["secrets"]) == ["PROBE_PASSWORD", "PROBE_TOKEN"]
    stop_session(control, "probe", live)
    wait_ended(control, "probe", live)

    for what, text in seen:
        for value in values:
            assert value not in text, f"a secret value is in the response to {what}"
    stored = logs(control, "probe")
    assert any("probe bot action" in entry["log"] for entry in stored)
    for entry in stored:
        for value in values:
            assert value not in entry["log"], entry
    dump = database_dump(control)
    assert "PROBE_TOKEN" in dump  # the key names are stored in the clear, the values not
    for value in values:
        assert value not in dump
        assert value not in control.process.logs()
    # The database files (SQLite's, WAL included) and everything else under the state dir.
    files = [p for p in control.state_dir.rglob("*") if p.is_file()]
    if "CATTERY_DATABASE_URL" not in control.process.env:
        assert {"cattery.db", "cattery.db-wal"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        for value in values:
            assert value.encode() not in data, f"a secret value is in {path}"
