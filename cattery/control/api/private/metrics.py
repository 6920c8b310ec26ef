"""``GET /metrics``: the control plane's Prometheus metrics.

The admin token sees every agent's series; a private key its organization's; a request
from an allow-listed scrape address (``CATTERY_METRICS__SCRAPE_ADDRESSES``) needs no key
and sees every agent's. A public key is refused: apps hold those.
"""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from cattery.control.deps import State, any_key
from cattery.errors import Forbidden
from cattery.store.models import ApiKeyKind


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/metrics")
    async def metrics(request: Request, state: State) -> Response:
        organization: str | None = None
        if not _allow_listed(request, state):
            caller = await any_key(request, state)
            if caller.kind == ApiKeyKind.PUBLIC:
                raise Forbidden("A public key can't read metrics: use a private key")
            if caller.kind != ApiKeyKind.ADMIN:
                organization = caller.organization.name
        body = state.metrics.render(organization)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


def _allow_listed(request: Request, state: State) -> bool:
    networks = state.settings.metrics.scrape_networks
    if not networks or request.client is None:
        return False
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(address in network for network in networks)
