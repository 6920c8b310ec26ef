"""API keys: stored as SHA-256 hashes; the raw key is returned once, at creation."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.errors import InvalidRequest
from cattery.store.crypto import hash_key, new_key
from cattery.store.models import ApiKey, ApiKeyKind, Organization
from cattery.store.types import utcnow


async def create_api_key(
    db: AsyncSession,
    organization_id: str,
    kind: ApiKeyKind | str,
    name: str,
    user_id: str | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its raw value; only the hash is kept, except for public keys."""
    try:
        kind = ApiKeyKind(kind)
    except ValueError:
        raise InvalidRequest(f"Invalid API key type {kind!r}") from None
    raw = new_key(kind)
    key = ApiKey(
        organization_id=organization_id,
        user_id=user_id,
        name=name,
        kind=kind.value,
        key_hash=hash_key(raw),
        public_value=raw if kind is ApiKeyKind.PUBLIC else None,
    )
    db.add(key)
    await db.flush()
    return key, raw


async def find_active_api_key(db: AsyncSession, raw: str) -> tuple[ApiKey, Organization] | None:
    """The unrevoked key whose value is ``raw``, with its organization; None if unknown."""
    row = (
        await db.execute(
            select(ApiKey, Organization)
            .join(Organization, Organization.id == ApiKey.organization_id)
            .where(ApiKey.key_hash == hash_key(raw), ApiKey.revoked_at.is_(None))
        )
    ).first()
    return None if row is None else (row[0], row[1])


async def get_api_key(db: AsyncSession, organization_id: str, key_id: str) -> ApiKey | None:
    key = await db.get(ApiKey, key_id)
    return key if key is not None and key.organization_id == organization_id else None


async def list_api_keys(
    db: AsyncSession,
    organization_id: str,
    kind: ApiKeyKind | str | None = None,
    include_revoked: bool = False,
) -> list[ApiKey]:
    """An organization's keys, oldest first."""
    query = select(ApiKey).where(ApiKey.organization_id == organization_id)
    if kind is not None:
        query = query.where(ApiKey.kind == ApiKeyKind(kind).value)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return list(await db.scalars(query.order_by(ApiKey.created_at, ApiKey.id)))


async def list_public_api_keys(
    db: AsyncSession, organization_id: str, include_revoked: bool = False
) -> list[ApiKey]:
    """The keys ``organizations keys list`` shows, each with its full ``public_value``."""
    return await list_api_keys(db, organization_id, ApiKeyKind.PUBLIC, include_revoked)


async def revoke_api_key(db: AsyncSession, organization_id: str, key_id: str) -> bool:
    """Revoke a key of this organization (idempotent); False if it has no such key."""
    key = await get_api_key(db, organization_id, key_id)
    if key is None:
        return False
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        await db.flush()
    return True
