"""A test bot that answers ``POST /whatsapp`` itself, to show what reached the instance.

The runtime adds its own WhatsApp route only when ``WHATSAPP_TOKEN`` and the phone number id
are set; without them this route gets the webhooks and nothing calls Meta. It answers with
what it received: ``{"session_id", "signature", "body"}``, with a 400 when the body
mentions ``refuse-this-call`` (an instance that could not take the call).
"""

from fastapi import Request
from fastapi.responses import JSONResponse

from pipecatcloud_system import app


@app.post("/whatsapp")
async def whatsapp(request: Request) -> JSONResponse:
    body = (await request.body()).decode()
    received = {
        "session_id": request.headers.get("x-daily-session-id"),
        "signature": request.headers.get("x-hub-signature-256"),
        "body": body,
    }
    return JSONResponse(received, status_code=400 if "refuse-this-call" in body else 200)


async def bot(runner_args) -> None:
    """Never called: no ``/bot`` reaches an instance that answers a WhatsApp call."""
