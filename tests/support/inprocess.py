"""The control plane in this process: ``create_app`` on httpx's ASGI transport.

For what needs no server process (validation, limits, the API's answers): no boot, no port.
Its lifespan runs as ``cattery serve``'s does, with its state under a test's folder.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from cattery.control.app import create_app
from cattery.settings import Settings
from tests.support.control import ADMIN_TOKEN
from tests.support.processes import AGENT_ROOTS

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
async def app_client(state_dir: Path, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an in-process control plane, sending the admin token."""
    async with running_app(settings_for(state_dir, **overrides)) as app:
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url=BASE_URL, headers=headers
        ) as client:
            yield client
