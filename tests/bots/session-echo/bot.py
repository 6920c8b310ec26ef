"""A test bot whose Session API routes show what reached the instance.

ANY  /echo/{path}  -> {"method", "path", "query", "headers", "multi", "body"} (``multi``: every
                      X-Multi header), with X-Echo-Method and two Set-Cookie headers
POST /end          -> the session ends (completed)

Responses are gzipped for clients that accept it, as many web apps' are.
"""

import asyncio

from fastapi import Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse

from pipecatcloud_system import app

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
_ended: asyncio.Event | None = None

app.add_middleware(GZipMiddleware, minimum_size=100)


def ended() -> asyncio.Event:
    """Made on first use, inside the instance's event loop; /end may come before bot()."""
    global _ended
    if _ended is None:
        _ended = asyncio.Event()
    return _ended


@app.api_route("/echo/{path:path}", methods=METHODS)
async def echo(request: Request, path: str) -> JSONResponse:
    body = await request.body()
    response = JSONResponse(
        {
            "method": request.method,
            "path": path,
            "query": request.url.query,
            "headers": dict(request.headers),
            "multi": request.headers.getlist("x-multi"),
            "body": body.decode(errors="replace"),
        },
        headers={"X-Echo-Method": request.method},
    )
    response.set_cookie("first", "1")
    response.set_cookie("second", "2")
    return response


@app.post("/end")
async def end() -> dict[str, str]:
    ended().set()
    return {"status": "ending"}


async def bot(runner_args) -> None:
    await ended().wait()
