"""The control plane in this process: ``create_app`` on httpx's ASGI transport.

For what needs no server process (validation, limits, the API's answers): no boot, no port.
Its lifespan runs as ``cattery serve``'s does, with its state under a test's folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from cattery.control.app import Seams, create_app
from cattery.control.state import ControlState
from cattery.settings import Settings
from tests.support.control import ADMIN_TOKEN, ORG
from tests.support.fake_backend import FakeBackend
from tests.support.processes import AGENT_ROOTS
from tests.support.waiting import async_wait_for

BASE_URL = "http://cattery.test"


def settings_for(state_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("agent_roots", AGENT_ROOTS)
    return Settings(state_dir=state_dir, admin_token=ADMIN_TOKEN, **overrides)


@asynccontextmanager
async def running_app(settings: Settings, **app_options: Any) -> AsyncIterator[FastAPI]:
    """``create_app(settings, **app_options)`` with its lifespan entered: ready for requests
    until the end."""
    app = create_app(settings, **app_options)
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def admin_client(app: FastAPI, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` (its lifespan running) on httpx's ASGI transport, sending the
    admin token; ``options`` go to ``httpx.AsyncClient``."""
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(
        transport=transport, base_url=BASE_URL, headers=headers, **options
    ) as client:
        yield client


@asynccontextmanager
async def app_client(state_dir: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an in-process control plane, sending the admin token."""
    async with running_app(settings_for(state_dir, **overrides)) as app, admin_client(app) as c:
        yield c


# -- the control plane with the fake backend as its local one: deploys without processes ----

STATUS = f"/v1/organizations/{ORG}/services"


def bot(folder: Path) -> str:
    """A folder holding a bot (the fake backend never runs it); its path, to deploy."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bot.py").write_text("async def bot(runner_args):\n    pass\n")
    return str(folder)


@asynccontextmanager
async def fake_control_plane(
    state_dir: Path,
    roots: Path,
    backend: FakeBackend,
    instances: httpx.AsyncClient | None = None,
) -> AsyncIterator[tuple[httpx.AsyncClient, ControlState]]:
    """``create_app`` whose local backend is ``backend``; a client sending the admin token,
    and the app's state. Folders under ``roots`` deploy; their probes are fake instances,
    and ``instances`` (a mock transport's client) answers sessions' dispatches for them."""
    settings = settings_for(state_dir, agent_roots=str(roots))
    seams = Seams(backends={"local": backend}, instance_http=instances)
    async with running_app(settings, seams=seams) as app, admin_client(app) as client:
        yield client, app.state.control


async def status_when(
    client: httpx.AsyncClient, name: str, done: Callable[[dict], bool], what: str
) -> dict:
    """``agent status`` of ``name`` once ``done`` accepts it."""

    async def check() -> dict | None:
        resp = await client.get(f"{STATUS}/{name}")
        assert resp.status_code == 200, resp.text
        body = resp.json()["body"]
        return body if done(body) else None

    return await async_wait_for(check, timeout=20, what=what)


def settled(body: dict) -> bool:
    """The official CLI's test: the deploy it asked for failed, or is the one that serves."""
    reconciled = body["reconciledDeploymentId"] == body["desiredDeploymentId"]
    return bool(body["errors"]) or (body["available"] and body["ready"] and reconciled)
