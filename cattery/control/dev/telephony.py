"""Phone calls in ``cattery dev``: the carrier's call webhook and the media stream it opens.

As with Pipecat's runner started with ``-t twilio --proxy HOST``: a carrier's number points
its call webhook at ``https://HOST/`` (``POST /``), which answers in the carrier's markup
with a media stream at ``wss://HOST/ws``, and the carrier connects there. ``/ws`` is the
dev agent's: the call takes an instance from its pool like any call on ``/ws/{carrier}``,
and its carrier is told by its first messages, so every carrier may use it whatever ``-t``
says. With ``CATTERY_WS_AUTH=token`` the webhook's stream URL carries a fresh token
(``/ws/{token}``), and ``/ws`` needs one. ``/ws/twilio`` and the other carriers' names keep
their public meaning (``serviceHost``), as the starts' ``wsUrl`` have it.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, WebSocket

from cattery.control.deps import State
from cattery.control.mediasockets import ANY_CARRIER, serve_websocket
from cattery.control.sessions import CARRIERS
from cattery.control.state import ControlState
from cattery.control.wstokens import telephony_use
from cattery.errors import InvalidRequest
from cattery.integrations.telephony import XML_CARRIERS, stream_xml

NO_WEBHOOK = "NO_CALL_WEBHOOK"


def add_telephony_routes(router: APIRouter) -> None:
    """``POST /`` (the carrier's call webhook), ``WS /ws`` and ``WS /ws/{token}``."""

    @router.post("/")
    async def call_webhook(state: State) -> Response:
        return Response(_webhook_answer(state), media_type="application/xml")

    @router.websocket("/ws")
    @router.websocket("/ws/{token}")
    async def media_stream(websocket: WebSocket, token: str | None = None) -> None:
        state: ControlState = websocket.app.state.control
        if token in CARRIERS:  # the public /ws/{carrier}, which this route would shadow
            await serve_websocket(state, websocket, token)
            return
        await serve_websocket(
            state, websocket, ANY_CARRIER, service_host=service_host(state), path_token=token
        )


def service_host(state: ControlState) -> str:
    """The dev agent's ``AGENT.ORG``, as a carrier's ``serviceHost`` would name it."""
    return f"{state.settings.dev.agent}.{state.settings.organization}"


def _webhook_answer(state: ControlState) -> str:
    """The ``-t`` carrier's XML that streams the call to ``wss://{--proxy}/ws``."""
    carrier, proxy = state.settings.dev.transport, state.settings.dev.proxy
    if carrier == "exotel":
        raise InvalidRequest(
            f"Exotel calls no webhook: give its Voicebot applet wss://{proxy or 'HOST'}/ws",
            code=NO_WEBHOOK,
        )
    if carrier not in XML_CARRIERS or not proxy:
        raise InvalidRequest(
            "POST / answers carriers' call webhooks: start cattery dev with "
            f"-t {'|'.join(XML_CARRIERS)} and --proxy HOST (the public host that reaches it)",
            code=NO_WEBHOOK,
        )
    url = f"wss://{proxy}/ws"
    if state.settings.ws_auth == "token":
        url += "/" + state.ws_tokens.issue(service_host(state), telephony_use(carrier))
    return stream_xml(carrier, url)
