"""The deploy fields kept per deployment beside image and scaling: ``architecture``,
``websocketAuth`` and ``krispViva``, each checked and, when a deploy leaves it out,
carried over from the agent's previous deployment."""

from __future__ import annotations

from typing import Any

from cattery.errors import InvalidRequest
from cattery.settings import Settings

ARCHITECTURES = ("amd64", "arm64")
WEBSOCKET_AUTH = ("token", "none")
KRISP_VIVA_FILTERS = ("tel", "pro")


def deploy_fields(settings: Settings, req: Any, previous: Any) -> dict[str, str | None]:
    """Columns of the new deployment (``architecture``, ``websocket_auth``,
    ``krisp_viva_audio_filter``); a 400 naming what is wrong."""
    architecture = req.architecture or (previous.architecture if previous else None)
    if architecture is not None:
        if architecture not in ARCHITECTURES:
            raise InvalidRequest(f"architecture must be one of {', '.join(ARCHITECTURES)}")
        if architecture not in settings.architectures:
            supported = ", ".join(settings.architectures) or "none"
            raise InvalidRequest(
                f"This cattery's regions run {supported}, not {architecture}: build the image "
                f"for {supported} or run cattery on a {architecture} machine",
                code="ARCHITECTURE_NOT_SUPPORTED",
            )
    websocket_auth = req.websocketAuth or (previous.websocket_auth if previous else None)
    if websocket_auth is not None and websocket_auth not in WEBSOCKET_AUTH:
        raise InvalidRequest(f"websocketAuth must be one of {', '.join(WEBSOCKET_AUTH)}")
    if req.krispViva is not None:
        audio_filter = req.krispViva.get("audioFilter")
        if audio_filter is not None and audio_filter not in KRISP_VIVA_FILTERS:
            raise InvalidRequest(
                f"krispViva.audioFilter must be one of {', '.join(KRISP_VIVA_FILTERS)} or null"
            )
    else:
        audio_filter = previous.krisp_viva_audio_filter if previous else None
    return {
        "architecture": architecture,
        "websocket_auth": websocket_auth,
        "krisp_viva_audio_filter": audio_filter,
    }
