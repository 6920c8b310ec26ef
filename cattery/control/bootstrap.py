"""First start: one organization, the admin user, and an admin token shown exactly once."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.control import regions
from cattery.settings import Settings
from cattery.store import repositories as repo
from cattery.store.crypto import hash_key
from cattery.store.models import ApiKey, ApiKeyKind


@dataclass(frozen=True)
class Bootstrap:
    organization_id: str
    admin_token: str | None  # only when it was created now, to be printed once


async def bootstrap(db: AsyncSession, settings: Settings) -> Bootstrap:
    await regions.seed(db, settings)
    org = await repo.ensure_default_organization(db, settings.organization)
    user = await repo.ensure_user(db, settings.admin_email)
    keys = await repo.list_api_keys(db, org.id)
    if any(k.kind == ApiKeyKind.ADMIN and k.revoked_at is None for k in keys):
        return Bootstrap(org.id, None)
    given = settings.admin_token.get_secret_value() if settings.admin_token else None
    if given:
        key = ApiKey(
            organization_id=org.id,
            user_id=user.id,
            name="admin",
            kind=ApiKeyKind.ADMIN.value,
            key_hash=hash_key(given),
        )
        db.add(key)
        await db.flush()
        return Bootstrap(org.id, given)
    return Bootstrap(org.id, await mint_admin_token(db, settings))


async def mint_admin_token(db: AsyncSession, settings: Settings, name: str = "admin") -> str:
    """A new admin token of the organization (made first if need be), for its admin user:
    the first start's, or another (``cattery token create --admin``) when one is lost."""
    org = await repo.ensure_default_organization(db, settings.organization)
    user = await repo.ensure_user(db, settings.admin_email)
    _, raw = await repo.create_api_key(db, org.id, ApiKeyKind.ADMIN, name, user_id=user.id)
    return raw
