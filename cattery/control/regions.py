"""Regions: registered, shown and deleted through Pipecat Cloud's region routes, seeded
from the settings' ``regions`` at start, and joined by new machines with one-time enroll
tokens (``cattery node join``).

Regions are the platform's, as its machines are: every organization sees the same ones,
and only the admin token registers, deletes or enrolls.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.contract import REGION_LABEL
from cattery.control import wire
from cattery.control.lookups import Principal
from cattery.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthorized,
)
from cattery.settings import Settings
from cattery.store import hash_key
from cattery.store import repositories as repo
from cattery.store.models import ApiKeyKind, Region
from cattery.store.repositories._validate import check_slug
from cattery.store.types import utcnow

if TYPE_CHECKING:
    from cattery.control.state import ControlState

#: what an enroll token starts with, so a leaked one is recognisable
ENROLL_TOKEN_PREFIX = "cattery_enroll_"
ARCHITECTURE_NAMES = ("amd64", "arm64")


class EnrollTokenRefused(Unauthorized):
    code = "ENROLL_TOKEN_INVALID"
    default_message = (
        "This enroll token is unknown, expired or used already: mint a new one with "
        "`pipecat cloud regions enroll-token REGION`"
    )


class NoCluster(Conflict):
    code = "NO_CLUSTER"
    default_message = (
        "This cattery runs on one machine (CATTERY_RAY__ADDRESS is unset): there is no "
        "cluster to join"
    )


class RegisterRegionRequest(BaseModel):
    """``pipecat cloud regions register``'s payload; omitted fields keep their values."""

    model_config = ConfigDict(extra="ignore")
    regionKey: str = Field(min_length=1, max_length=63)
    displayName: str | None = Field(None, max_length=255)
    supportedArchitectures: list[str] | None = Field(None, max_length=8)
    defaultArchitecture: str | None = None
    wsPublicEndpoint: str | None = Field(None, max_length=2048)
    workloadsNamespace: str | None = Field(None, max_length=63)


@dataclass(frozen=True)
class JoinDetails:
    """What a new machine needs to join the cluster in its region."""

    ray_address: str
    ray_auth_token: str | None
    region: str

    def to_body(self) -> dict[str, Any]:
        return {
            "rayAddress": self.ray_address,
            "rayAuthToken": self.ray_auth_token,
            "region": self.region,
            "labels": {REGION_LABEL: self.region},
        }


def require_admin(caller: Principal) -> None:
    if caller.kind != ApiKeyKind.ADMIN:
        raise Forbidden(
            "Regions are the platform's: registering, deleting and enrolling them take the "
            "admin token"
        )


async def seed(db: AsyncSession, settings: Settings) -> None:
    """The settings' regions (and default region) exist: registered at every start if
    missing, so a region named in the settings can't stay deleted."""
    await repo.ensure_regions(db, list(dict.fromkeys([*settings.regions, settings.default_region])))


async def names(db: AsyncSession) -> list[str]:
    return [r.key for r in await repo.list_regions(db)]


async def check_region(db: AsyncSession, key: str) -> str:
    """``key`` if it is a stored region; else a 400 naming the ones there are."""
    if await repo.get_region(db, key) is None:
        known = ", ".join(await names(db)) or "none"
        raise InvalidRequest(
            f"Unknown region {key!r}; this cattery has {known}", code="INVALID_REGION"
        )
    return key


def _architectures(settings: Settings, region: Region) -> list[str]:
    return list(region.supported_architectures or settings.architectures)


def list_item(settings: Settings, region: Region) -> dict[str, Any]:
    """One row of ``regions list``."""
    archs = _architectures(settings, region)
    return {
        "code": region.key,
        "display_name": region.display_name or region.key,
        "supported_architectures": archs,
        "default_architecture": region.default_architecture or (archs[0] if archs else None),
    }


async def listing(db: AsyncSession, settings: Settings) -> list[dict[str, Any]]:
    return [list_item(settings, r) for r in await repo.list_regions(db)]


def record(settings: Settings, region: Region) -> dict[str, Any]:
    """The full record ``regions show`` and ``regions register`` print."""
    return {
        **list_item(settings, region),
        "region_key": region.key,
        "enrollment_status": "enrolled" if region.enrolled_at else "pending",
        "enrolled_at": wire.iso(region.enrolled_at) if region.enrolled_at else None,
        "intermediate_expires_at": None,
        "ws_public_endpoint": region.ws_public_endpoint,
        "workloads_namespace": region.workloads_namespace,
        "created_at": wire.iso(region.created_at),
    }


async def get(db: AsyncSession, key: str) -> Region:
    region = await repo.get_region(db, key)
    if region is None:
        raise NotFound(f"Region {key!r} not found: this cattery has {', '.join(await names(db))}")
    return region


def _fields(req: RegisterRegionRequest, stored: Region | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if req.displayName is not None:
        fields["display_name"] = req.displayName.strip() or None
    if req.supportedArchitectures is not None:
        archs = list(dict.fromkeys(a.strip() for a in req.supportedArchitectures if a.strip()))
        wrong = [a for a in archs if a not in ARCHITECTURE_NAMES]
        if wrong:
            raise InvalidRequest(
                f"Unknown architectures {', '.join(wrong)}: use {', '.join(ARCHITECTURE_NAMES)}"
            )
        fields["supported_architectures"] = archs or None
    if req.defaultArchitecture is not None:
        supported = fields.get("supported_architectures", stored and stored.supported_architectures)
        if req.defaultArchitecture not in (supported or ARCHITECTURE_NAMES):
            raise InvalidRequest(
                f"defaultArchitecture {req.defaultArchitecture!r} is not one the region runs"
            )
        fields["default_architecture"] = req.defaultArchitecture
    if req.wsPublicEndpoint is not None:
        endpoint = req.wsPublicEndpoint.strip()
        if endpoint and not endpoint.startswith(("ws://", "wss://")):
            raise InvalidRequest("wsPublicEndpoint must be a ws:// or wss:// URL")
        fields["ws_public_endpoint"] = endpoint or None
    if req.workloadsNamespace is not None:
        fields["workloads_namespace"] = check_slug(req.workloadsNamespace, "namespace")
    return fields


async def register(db: AsyncSession, req: RegisterRegionRequest) -> Region:
    """Register the region or update the fields given (Pipecat Cloud's upsert)."""
    check_slug(req.regionKey, "region")
    region, _ = await repo.upsert_region(
        db, req.regionKey, **_fields(req, await repo.get_region(db, req.regionKey))
    )
    return region


async def delete(state: ControlState, db: AsyncSession, key: str) -> None:
    """Delete the region, unless something still runs there (409, as Pipecat Cloud).
    Organizations that defaulted to it fall back to the platform's default region."""
    settings = state.settings
    await get(db, key)
    if key == settings.default_region:
        raise Conflict(
            f"Region {key!r} is this cattery's default region (CATTERY_DEFAULT_REGION): "
            "make another region the default first",
            code="REGION_IN_USE",
        )
    use = await repo.region_use(db, key)
    if use.agents or use.live_sessions:
        raise Conflict(
            f"Region {key!r} still has {use.agents} agent(s) and {use.live_sessions} live "
            "session(s): delete its agents (and let their sessions end) first",
            code="REGION_IN_USE",
        )
    await repo.delete_region(db, key)
    await db.commit()  # then forgotten: callers' cached organizations hold the old default
    state.lookups.clear()


async def mint_enroll_token(db: AsyncSession, settings: Settings, key: str) -> dict[str, Any]:
    """A one-time token for a machine to join ``key``; only its hash is kept."""
    await get(db, key)
    raw = ENROLL_TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + timedelta(seconds=settings.ray.enroll_token_ttl_seconds)
    await repo.delete_spent_enroll_tokens(db)
    await repo.create_enroll_token(db, key, hash_key(raw), expires)
    return {"token": raw, "region": key, "expiresAt": wire.iso(expires)}


def join_address(settings: Settings) -> str | None:
    """Where joining machines reach the cluster's head; None when there is no cluster."""
    ray = settings.ray
    if ray.join_address:
        return ray.join_address
    if ray.address and ray.address != "auto":
        return ray.address.removeprefix("ray://")
    return None


async def exchange(db: AsyncSession, settings: Settings, raw: str) -> JoinDetails:
    """The join details for a valid enroll token, which is spent doing so."""
    address = join_address(settings)
    if address is None:  # before spending the token: it stays good for a later try
        raise NoCluster()
    if not raw.startswith(ENROLL_TOKEN_PREFIX):
        raise EnrollTokenRefused()
    key = await repo.use_enroll_token(db, hash_key(raw))
    if key is None:
        raise EnrollTokenRefused()
    token = settings.ray.auth_token
    return JoinDetails(
        ray_address=address,
        ray_auth_token=token.get_secret_value() if token else None,
        region=key,
    )
