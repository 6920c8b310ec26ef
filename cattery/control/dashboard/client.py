"""The talk page without a login, for ``cattery dev``'s ``/client/``: the same offline
WebRTC client as the dashboard's, pointed at the development runner's routes."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from cattery.control.dashboard.auth import PAGE_HEADERS, PREFIX
from cattery.control.dashboard.routes import templates


def offline_client_page(request: Request, agent_name: str, *, prebuilt: bool) -> Response:
    """``prebuilt``: Pipecat's prebuilt UI is served too (a link to it is shown)."""
    return templates.TemplateResponse(
        request,
        "client.html",
        {
            "prefix": PREFIX,
            "viewer": None,
            "agent_name": agent_name,
            "prebuilt": prebuilt,
            "start_url": "/start",
            "offer_url": "/sessions/{sessionId}/api/offer",
            "agent": {"name": agent_name},
        },
        headers=PAGE_HEADERS,
    )
