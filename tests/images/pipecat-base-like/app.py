"""A server in the pattern of pipecat-base's open-source app.py, written for this test.

``POST /bot`` runs ``bot()`` and answers when it returns; ``WS /ws`` hands the socket to
``bot()``. Lines are tagged with the session id, as the base image's logger does.
"""

import os  # noqa: I001 (bot is the image's own module, beside this file)
import sys
from typing import Annotated

import uvicorn
from fastapi import FastAPI, Header, WebSocket
from loguru import logger
from pipecatcloud.agent import PipecatSessionArguments, WebSocketSessionArguments

from bot import bot

logger.remove()
logger.add(sys.stderr, format="{time} | {level} | {extra[session_id]} - {message}")
logger.configure(extra={"session_id": "NONE"})
app = FastAPI()


@app.post("/bot")
async def start_bot(body: dict, x_daily_session_id: Annotated[str | None, Header()] = None) -> dict:
    with logger.contextualize(session_id=x_daily_session_id):
        await bot(PipecatSessionArguments(session_id=x_daily_session_id, body=body))
    return {}


@app.websocket("/ws")
async def websocket(ws: WebSocket) -> None:
    await ws.accept()
    session_id = ws.headers.get("x-daily-session-id")
    with logger.contextualize(session_id=session_id):
        await bot(WebSocketSessionArguments(session_id=session_id, websocket=ws))


if __name__ == "__main__":
    uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
