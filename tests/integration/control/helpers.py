"""Small helpers the control-plane API tests share: refusals, sessions, pools, tenants."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import MetaData, select

from cattery.store import repositories as repo
from cattery.store.db import create_engine, sessionmaker
from cattery.store.models import ApiKeyKind
from tests.support.control import ORG, ControlPlane, control_plane_process
from tests.support.control import refused as refused  # the tests here import it from here
from tests.support.waiting import wait_for

SESSION_NOT_READY = "Invalid or not-yet-ready session_id"

_POSTGRESQL = pytest.param("postgresql", marks=pytest.mark.postgres)
#: a control-plane test that runs on PostgreSQL only (its SQLite twin adds nothing the
#: others don't show: they all run on SQLite)
ON_POSTGRESQL = pytest.mark.parametrize("database_backend", [_POSTGRESQL])
#: a control-plane test that runs on SQLite and on PostgreSQL
ON_BOTH_DATABASES = pytest.mark.parametrize("database_backend", ["sqlite", _POSTGRESQL])


@contextmanager
def running_control(tmp_path: Path, **env: str) -> Iterator[ControlPlane]:
    """``cattery serve`` with its state under ``tmp_path`` and ``env``, until the block ends."""
    proc = control_plane_process(tmp_path / "state", tmp_path / "serve.log", **env).start()
    try:
        proc.wait_ready("/healthz", timeout=60)
        yield ControlPlane(proc, tmp_path / "state")
    finally:
        proc.stop()


def put_secrets(control: ControlPlane, name: str, **values: str) -> None:
    """Set ``values`` in the organization's secret set ``name``, one by one as the CLI does."""
    with control.client() as c:
        for key, value in values.items():
            resp = c.put(
                f"/v1/organizations/{ORG}/secrets/{name}",
                json={
                    "name": name,
                    "isImagePullSecret": False,
                    "secretKey": key,
                    "secretValue": value,
                },
            )
            assert resp.status_code == 200, resp.text


def start(
    control: ControlPlane, public_key: str, agent: str, body: Any = None, **request: Any
) -> httpx.Response:
    payload = {"createDailyRoom": False, **request}
    if body is not None:
        payload["body"] = body
    with control.client(public_key) as c:
        return c.post(f"/v1/public/{agent}/start", json=payload)


def start_session(control: ControlPlane, public_key: str, agent: str, body: Any = None) -> str:
    resp = start(control, public_key, agent, body)
    assert resp.status_code == 200, resp.text
    return resp.json()["sessionId"]


def get_session(control: ControlPlane, agent: str, session_id: str) -> dict[str, Any]:
    with control.client() as c:
        resp = c.get(f"/v1/organizations/{ORG}/services/{agent}/sessions/{session_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def stop_session(control: ControlPlane, agent: str, session_id: str) -> None:
    with control.client() as c:
        resp = c.delete(f"/v1/organizations/{ORG}/services/{agent}/sessions/{session_id}")
    assert resp.status_code == 200, resp.text


def wait_ended(control: ControlPlane, agent: str, session_id: str, timeout: float = 30) -> dict:
    """The session's record once it has an end state."""

    def ended() -> dict | None:
        session = get_session(control, agent, session_id)
        return session if session["endedAt"] is not None and session["endState"] else None

    return wait_for(ended, timeout=timeout, what=f"session {session_id} to end")


@contextmanager
def held_probe_sessions(
    control: ControlPlane, agent: str, n: int, root: Path
) -> Iterator[list[dict[str, Any]]]:
    """``n`` sessions of the probe bot ``agent``, each held until the block ends and then
    waited for until it ended; yields the report each wrote once running (its ``node``).
    ``root``: a folder the instances can write in (a cluster's own)."""
    folder = Path(tempfile.mkdtemp(prefix="cattery-held-", dir=root))
    folder.chmod(0o1777)
    release = folder / "release"
    key = control.public_key()
    sessions, reports = [], []
    try:
        for i in range(n):
            report = folder / f"report-{i}.json"
            body = {"action": "until", "path": str(release), "report_to": str(report)}
            resp = start(control, key, agent, body)
            assert resp.status_code == 200, resp.text
            sessions.append(resp.json()["sessionId"])
            reports.append(report)
        wait_for(lambda: all(r.exists() for r in reports), timeout=60, what="the reports")
        yield [json.loads(r.read_text()) for r in reports]
    finally:
        release.touch()
    for session_id in sessions:
        wait_ended(control, agent, session_id)


def pool_stats(control: ControlPlane, agent: str) -> dict[str, int]:
    with control.client() as c:
        resp = c.get(f"/v1/organizations/{ORG}/services/{agent}")
    assert resp.status_code == 200, resp.text
    return resp.json()["body"]["pool"]


def wait_pool(control: ControlPlane, agent: str, timeout: float = 30, **expected: int) -> dict:
    """Poll the agent's pool until its counts match ``expected`` (e.g. idle=1, busy=0)."""

    def matches() -> dict | None:
        stats = pool_stats(control, agent)
        return stats if all(stats[k] == v for k, v in expected.items()) else None

    return wait_for(matches, timeout=timeout, what=f"pool of {agent} to be {expected}")


def logs(control: ControlPlane, agent: str, session_id: str | None = None) -> list[dict]:
    params: dict[str, Any] = {"limit": 10_000}
    if session_id is not None:
        params["sessionId"] = session_id
    with control.client() as c:
        resp = c.get(f"/v1/organizations/{ORG}/services/{agent}/logs", params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()["logs"]


def database_url(control: ControlPlane) -> str:
    """The control plane's database: its ``CATTERY_DATABASE_URL``, else its SQLite file."""
    given = control.process.env.get("CATTERY_DATABASE_URL")
    if given:
        return given
    return f"sqlite+aiosqlite:///{(control.state_dir / 'cattery.db').resolve()}"


@dataclass(frozen=True)
class Tenant:
    """Another organization, made through the store: the API has no route that creates one."""

    name: str
    private_key: str
    public_key: str


def add_organization(control: ControlPlane, name: str) -> Tenant:
    async def create() -> Tenant:
        engine = create_engine(database_url(control))
        try:
            async with sessionmaker(engine).begin() as db:
                org = await repo.create_organization(db, name)
                _, private = await repo.create_api_key(db, org.id, ApiKeyKind.PRIVATE, "ops")
                _, public = await repo.create_api_key(db, org.id, ApiKeyKind.PUBLIC, "app")
        finally:
            await engine.dispose()
        return Tenant(name, private, public)

    return asyncio.run(create())


def database_dump(control: ControlPlane) -> str:
    """Every row of every table of the control plane's database, as text."""

    def dump(connection: Any) -> str:
        metadata = MetaData()
        metadata.reflect(connection)
        rows = []
        for table in metadata.sorted_tables:
            rows += [f"{table.name}: {row!r}" for row in connection.execute(select(table))]
        return "\n".join(rows)

    async def read() -> str:
        engine = create_engine(database_url(control))
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(dump)
        finally:
            await engine.dispose()

    return asyncio.run(read())


# --- cattery dev ----------------------------------------------------------------------------


def dev_status(dev: ControlPlane) -> dict[str, Any]:
    """``GET /status`` of a ``cattery dev``."""
    resp = httpx.get(dev.url + "/status", timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def dev_start(dev: ControlPlane, payload: Any) -> httpx.Response:
    """``POST /start`` with no key, as the runner's clients send it."""
    return httpx.post(dev.url + "/start", json=payload, timeout=60)


def list_sessions(control: ControlPlane, agent: str) -> list[dict[str, Any]]:
    with control.client() as c:
        resp = c.get(f"/v1/organizations/{ORG}/services/{agent}/sessions")
    assert resp.status_code == 200, resp.text
    return resp.json()["sessions"]
