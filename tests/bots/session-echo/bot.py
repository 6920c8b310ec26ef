"""A test bot whose Session API routes show what reached the instance.

ANY  /echo/{path}  -> {"method", "path", "query", "headers", "multi", "body"} (``multi``: every
                      X-Multi header), with X-Echo-Method and two Set-Cookie headers
GET  /stream       -> a streamed answer: "chunk 0\n", then one more per POST /stream/next,
                      up to ``?chunks=`` (3); each waits for the caller to have the last
POST /upload       -> {"received"}: the body, read as it arrives; GET /upload shows what
                      has arrived so far, while the caller is still sending
POST /end          -> the session ends (completed)

Responses are gzipped for clients that accept it, as many web apps' are.
"""

import asyncio

from fastapi import Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, StreamingResponse

from pipecatcloud_system import app

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
_ended: asyncio.Event | None = None
_releases: asyncio.Queue[None] | None = None
_uploaded: list[bytes] = []

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


def releases() -> asyncio.Queue[None]:
    global _releases
    if _releases is None:
        _releases = asyncio.Queue()
    return _releases


@app.get("/stream")
async def stream(chunks: int = 3) -> StreamingResponse:
    async def body():
        for i in range(chunks):
            if i:
                await releases().get()
            yield f"chunk {i}\n".encode()

    return StreamingResponse(body(), media_type="text/plain")


@app.post("/stream/next")
async def stream_next() -> dict[str, str]:
    releases().put_nowait(None)
    return {"status": "released"}


@app.post("/upload")
async def upload(request: Request) -> dict[str, str]:
    _uploaded.clear()
    async for chunk in request.stream():
        _uploaded.append(chunk)
    return {"received": b"".join(_uploaded).decode()}


@app.get("/upload")
async def uploaded() -> dict[str, str]:
    return {"received": b"".join(_uploaded).decode()}


@app.post("/end")
async def end() -> dict[str, str]:
    ended().set()
    return {"status": "ending"}


async def bot(runner_args) -> None:
    await ended().wait()
