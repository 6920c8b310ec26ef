"""Stand-ins for an app's session webhook endpoint: small aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.Response]]


@asynccontextmanager
async def webhook_endpoint(handler: Handler) -> AsyncIterator[str]:
    """``handler`` serving ``POST /hook`` on 127.0.0.1 at a free port; its URL."""
    app = web.Application()
    app.router.add_post("/hook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def hanging_endpoint() -> AsyncIterator[str]:
    """An endpoint that takes every request and never answers it; its URL. The requests
    still waiting are answered as it closes."""
    release = asyncio.Event()

    async def never(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async with webhook_endpoint(never) as url:
        try:
            yield url
        finally:
            release.set()
