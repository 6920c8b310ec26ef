"""Secret sets: values go in encrypted and never come back out through the API."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from cattery.control.deps import DB, Org, State
from cattery.control.images import PULL_CREDENTIALS_KEY, PULL_HOST_KEY, parse_credentials
from cattery.control.routing import BoundedJSONRoute
from cattery.control.secret_sets import set_secrets, unset_secret
from cattery.control.validation import (
    check_secret_key,
    check_set_name,
)
from cattery.errors import InvalidRequest, NotFound
from cattery.store import repositories as repo
from cattery.store.models import SecretSetKind


class SecretItem(BaseModel):
    key: str | None = None
    value: str | None = None
    secretKey: str | None = None
    secretValue: str | None = None


class PutSecretRequest(BaseModel):
    """The CLI sends one key per request; the OpenAPI form sends a list."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    isImagePullSecret: bool = False
    secretKey: str | None = None
    secretValue: str | None = None
    secrets: list[SecretItem] | None = None
    region: str | None = None
    #: image pull secrets: the registry the credentials (``secretValue``) are for
    host: str | None = None


def _pairs(req: PutSecretRequest) -> list[tuple[str, str]]:
    if req.isImagePullSecret and req.secretKey is None and not req.secrets:
        # the CLI's `secrets image-pull-secret NAME HOST CREDENTIALS`
        if not req.secretValue:
            raise InvalidRequest("An image pull secret needs secretValue: USERNAME:PASSWORD")
        parse_credentials(req.secretValue)  # a 400 now rather than a failed pull later
        return [(PULL_CREDENTIALS_KEY, req.secretValue), (PULL_HOST_KEY, req.host or "")]
    pairs: list[tuple[str, str]] = []
    if req.secretKey is not None:
        pairs.append((req.secretKey, req.secretValue or ""))
    for item in req.secrets or []:
        key = item.key if item.key is not None else item.secretKey
        value = item.value if item.value is not None else item.secretValue
        if key is None:
            raise InvalidRequest("Each secret needs a key")
        pairs.append((key, value or ""))
    if not pairs:
        raise InvalidRequest("No secret given: send secretKey and secretValue")
    return [(check_secret_key(k), v) for k, v in pairs]


def build_router() -> APIRouter:
    router = APIRouter(route_class=BoundedJSONRoute)
    for base in ("/v1/secrets", "/v1/organizations/{org}/secrets"):
        _add_routes(router, base)
    return router


def _add_routes(router: APIRouter, base: str) -> None:
    @router.get(base)
    async def list_sets(db: DB, org: Org) -> dict:
        sets = await repo.list_secret_sets(db, org.id)
        return {
            "sets": [
                {
                    "name": s.name,
                    "region": s.region,
                    "type": "imagePullSecret"
                    if s.kind == SecretSetKind.IMAGE_PULL_SECRET
                    else "secretSet",
                    "status": "ready",
                }
                for s in sets
            ]
        }

    @router.get(base + "/{set_name}")
    async def get_set(db: DB, org: Org, set_name: str) -> dict:
        found = await repo.get_secret_set(db, org.id, set_name)
        if found is None:
            raise NotFound(f"Secret set {set_name!r} not found")
        keys = await repo.list_secret_keys(db, found)
        return {
            "name": found.name,
            "region": found.region,
            "status": "ready",
            "secrets": [{"fieldName": k} for k in keys],
        }

    @router.put(base + "/{set_name}")
    async def put_secret(
        state: State, db: DB, org: Org, set_name: str, req: PutSecretRequest
    ) -> dict:
        check_set_name(set_name)
        kind = (
            SecretSetKind.IMAGE_PULL_SECRET if req.isImagePullSecret else SecretSetKind.SECRET_SET
        )
        await set_secrets(state, db, org, set_name, _pairs(req), region=req.region, kind=kind)
        return {"status": "OK", "name": set_name}

    @router.delete(base + "/{set_name}/{key}")
    async def delete_key(db: DB, org: Org, set_name: str, key: str) -> dict:
        await unset_secret(db, org, set_name, key)
        return {"status": "OK"}

    @router.delete(base + "/{set_name}")
    async def delete_set(db: DB, org: Org, set_name: str) -> dict:
        found = await repo.get_secret_set(db, org.id, set_name)
        if found is None:
            raise NotFound(f"Secret set {set_name!r} not found")
        await repo.delete_secret_set(db, found)
        return {"status": "OK"}
