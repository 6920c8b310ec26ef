"""Regions and their one-time enroll tokens.

Exchanging a token is one conditional UPDATE, so of two machines presenting the same
token at once exactly one gets the join details.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import Agent, Deployment, EnrollToken, Organization, Region, Session
from cattery.store.repositories._validate import check_slug
from cattery.store.types import utcnow

#: what registering may set; omitted fields keep their stored values
REGION_FIELDS = frozenset(
    {
        "display_name",
        "supported_architectures",
        "default_architecture",
        "ws_public_endpoint",
        "workloads_namespace",
        "enrolled_at",
    }
)


@dataclass(frozen=True)
class RegionUse:
    """What still runs in a region: it may not be deleted while either is non-zero."""

    agents: int
    live_sessions: int


async def list_regions(db: AsyncSession) -> list[Region]:
    """Oldest first: the platform's seeded regions lead, as its settings list them."""
    return list(await db.scalars(select(Region).order_by(Region.created_at, Region.key)))


async def get_region(db: AsyncSession, key: str) -> Region | None:
    return await db.get(Region, key)


async def upsert_region(db: AsyncSession, key: str, **fields: Any) -> tuple[Region, bool]:
    """Register ``key`` or update the fields given; True when it was new."""
    check_slug(key, "region")
    unknown = set(fields) - REGION_FIELDS
    if unknown:
        raise TypeError(f"not region fields: {sorted(unknown)}")
    region = await db.get(Region, key)
    created = region is None
    if region is None:
        region = Region(key=key)
        db.add(region)
    for name, value in fields.items():
        setattr(region, name, value)
    region.updated_at = utcnow()
    await db.flush()
    return region, created


async def ensure_regions(db: AsyncSession, keys: list[str]) -> list[str]:
    """Register those of ``keys`` that are missing (the settings' regions at start, served
    by this machine, so enrolled); the ones added, in order."""
    existing = set(await db.scalars(select(Region.key).where(Region.key.in_(keys))))
    added = []
    for key in keys:
        if key not in existing:
            await upsert_region(db, key, enrolled_at=utcnow())
            existing.add(key)
            added.append(key)
    return added


async def region_use(db: AsyncSession, key: str) -> RegionUse:
    """Live agents placed in ``key`` (their own or their active deployment's region) and
    sessions not yet ended of deployments there, across organizations."""
    agents = await db.scalar(
        select(func.count())
        .select_from(Agent)
        .outerjoin(Deployment, Deployment.id == Agent.active_deployment_id)
        .where(Agent.deleted_at.is_(None), or_(Agent.region == key, Deployment.region == key))
    )
    sessions = await db.scalar(
        select(func.count())
        .select_from(Session)
        .join(Deployment, Deployment.id == Session.deployment_id)
        .where(Session.ended_at.is_(None), Deployment.region == key)
    )
    return RegionUse(agents=int(agents or 0), live_sessions=int(sessions or 0))


async def delete_region(db: AsyncSession, key: str) -> bool:
    """Remove the region and its tokens; organizations defaulting to it fall back to the
    platform's default. False when there was none."""
    region = await db.get(Region, key)
    if region is None:
        return False
    await db.execute(delete(EnrollToken).where(EnrollToken.region_key == key))
    await db.execute(
        update(Organization).where(Organization.default_region == key).values(default_region=None)
    )
    await db.delete(region)
    await db.flush()
    return True


async def create_enroll_token(
    db: AsyncSession, region_key: str, token_hash: str, expires_at: datetime
) -> EnrollToken:
    token = EnrollToken(region_key=region_key, token_hash=token_hash, expires_at=expires_at)
    db.add(token)
    await db.flush()
    return token


async def use_enroll_token(
    db: AsyncSession, token_hash: str, now: datetime | None = None
) -> str | None:
    """Mark the token used if it is unused and unexpired; its region's key, else None."""
    now = now or utcnow()
    result = await db.execute(
        update(EnrollToken)
        .where(
            and_(
                EnrollToken.token_hash == token_hash,
                EnrollToken.used_at.is_(None),
                EnrollToken.expires_at > now,
            )
        )
        .values(used_at=now)
        .returning(EnrollToken.region_key)
    )
    key = result.scalar_one_or_none()
    if key is not None:
        await db.execute(
            update(Region)
            .where(Region.key == key, Region.enrolled_at.is_(None))
            .values(enrolled_at=now)
        )
    return key


async def delete_spent_enroll_tokens(db: AsyncSession, now: datetime | None = None) -> int:
    """Forget tokens that were used or have expired; how many."""
    now = now or utcnow()
    result = await db.execute(
        delete(EnrollToken).where(
            or_(EnrollToken.used_at.is_not(None), EnrollToken.expires_at <= now)
        )
    )
    return int(result.rowcount or 0)
