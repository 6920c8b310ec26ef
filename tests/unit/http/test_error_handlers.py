"""Every error either HTTP server answers has Pipecat Cloud's shape, unexpected ones too."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from cattery.error_handlers import install_error_handlers


async def test_an_unexpected_exception_is_a_json_500_that_hides_its_text() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("engine said: secret-detail")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        resp = await client.get("/boom")
    assert resp.status_code == 500
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"code": "INTERNAL_SERVER_ERROR", "error": "Internal server error"}
