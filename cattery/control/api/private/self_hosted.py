"""Pipecat Cloud features with no meaning on a self-hosted platform: spend limits, the
GitHub App, registry keys, referenced secrets and OAuth login. Each answers 501
``NOT_AVAILABLE_SELF_HOSTED`` with what to do instead, never a bare 404; the read-only
questions (``spend-limit show``, ``github status``) answer "none"."""

from __future__ import annotations

from fastapi import APIRouter

from cattery.control.deps import Org, State
from cattery.control.routing import BoundedJSONRoute
from cattery.errors import NotAvailableSelfHosted

ORG = "/v1/organizations/{org}"
SPEND = (
    "A self-hosted cattery has no billing, so there is no spend limit to set: cap usage with "
    "each agent's maxAgents instead"
)
GITHUB = (
    "A self-hosted cattery has no GitHub App: build from your checkout with "
    "`pipecat cloud deploy` (it uploads the folder and builds it here), e.g. from your CI"
)
REGISTRY = (
    "A self-hosted cattery has no image registry of its own: push to your registry and "
    "deploy with --credentials (an image pull secret), or let `pipecat cloud deploy` build "
    "the image here"
)
REFERENCES = (
    "A self-hosted cattery keeps secrets itself: set them with `pipecat cloud secrets set` "
    "instead of referencing another region's"
)
LOGIN = (
    "This cattery has no OIDC provider configured (CATTERY_OIDC__ISSUER, "
    "CATTERY_OIDC__CLIENT_ID), so `pipecat cloud auth login` can't sign you in: use "
    "`pipecat cloud auth use-pat` with the token `cattery serve` printed or one from "
    "`cattery token create`"
)


def _refuse(message: str):
    async def refuse(org: Org) -> dict:
        raise NotAvailableSelfHosted(message)

    return refuse


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)

    @router.get("/auth/config")
    async def auth_config(state: State) -> dict:
        oidc = state.settings.oidc
        if not oidc.issuer or not oidc.client_id:
            raise NotAvailableSelfHosted(LOGIN)
        return {"issuer": oidc.issuer, "client_id": oidc.client_id, "scopes": oidc.scopes}

    @router.get(ORG + "/spend-limit")
    async def spend_limit(org: Org) -> dict:
        return {
            "limitCents": None,
            "currentSpendCents": 0,
            "periodStart": None,
            "periodEnd": None,
            "blocked": False,
            "blockedAt": None,
        }

    router.add_api_route(ORG + "/spend-limit", _refuse(SPEND), methods=["PUT", "PATCH"])

    @router.get(ORG + "/github/installation")
    async def github_installation(org: Org) -> dict:
        return {"installation": None}

    for path, methods in (
        ("/github/installation", ["DELETE"]),
        ("/github/install-url", ["GET"]),
        ("/github/link-url", ["GET"]),
        ("/github/repositories", ["GET"]),
        ("/github/repositories/{owner}/{repo}/branches", ["GET"]),
        ("/services/{service}/environments/{environment}/git", ["GET", "POST", "DELETE"]),
        ("/services/{service}/environments/{environment}/git/deploy", ["POST"]),
    ):
        router.add_api_route(ORG + path, _refuse(GITHUB), methods=methods)
    for path, methods in (
        ("/registry-keys", ["GET", "POST"]),
        ("/registry-keys/{key}", ["DELETE"]),
    ):
        router.add_api_route(ORG + path, _refuse(REGISTRY), methods=methods)
    router.add_api_route(ORG + "/secrets/references", _refuse(REFERENCES), methods=["POST"])
    return router
