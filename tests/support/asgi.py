"""The control plane's app in this process, reached through httpx's ASGI transport.

httpx's transport runs no lifespan, so this runs the app's own (everything ``create_app``
opens, and its routers' state) around the client and hands each request that state, as a
server would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from cattery.control.app import create_app
from cattery.settings import Settings
from tests.support.control import ADMIN_TOKEN

#: an https origin on loopback: the dashboard's cookie is Secure, and httpx sends a Secure
#: cookie only over https
BASE_URL = "https://127.0.0.1"


def in_process_settings(state_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        state_dir=state_dir,
        admin_token=ADMIN_TOKEN,
        database_url=f"sqlite+aiosqlite:///{state_dir / 'cattery.db'}",
        **overrides,
    )


@asynccontextmanager
async def app_client(settings: Settings, **app_options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``create_app(settings, **app_options)``, its lifespan running; no
    redirects followed. ``client.control`` is the app's ``ControlState`` (its store, for
    arranging rows)."""
    app = create_app(settings, **app_options)
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                scope["state"] = dict(state or {})
            await app(scope, receive, send)

        transport = httpx.ASGITransport(app=with_state)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            client.control = app.state.control  # type: ignore[attr-defined]
            yield client
