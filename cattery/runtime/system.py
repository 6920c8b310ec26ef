"""The app a bot may add routes to, exposed as ``pipecatcloud_system.app``.

Bots written for Pipecat Cloud do ``from pipecatcloud_system import app`` at import time
and register their Session API routes on it, so the app must exist before ``bot.py`` is
imported. It is made on first access rather than at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]

_app: FastAPI | None = None


def get_app() -> FastAPI:
    """The one app of this process, made on first use."""
    global _app
    if _app is None:
        _app = FastAPI(title="cattery runtime", docs_url=None, redoc_url=None, openapi_url=None)
    return _app


def add_lifespan_to_app(new_lifespan: Lifespan) -> None:
    """Nest ``new_lifespan`` inside the app's current lifespan."""
    app = get_app()
    existing = app.router.lifespan_context

    @asynccontextmanager
    async def combined(app: FastAPI) -> AsyncIterator[None]:
        async with existing(app), new_lifespan(app):
            yield

    app.router.lifespan_context = combined


def __getattr__(name: str) -> Any:
    if name == "app":
        return get_app()
    raise AttributeError(name)
