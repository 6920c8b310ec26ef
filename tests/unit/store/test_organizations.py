"""Organizations, users and API keys."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.errors import Conflict, InvalidRequest
from cattery.store import hash_key
from cattery.store.models import ApiKeyKind, Organization
from cattery.store.repositories import (
    create_api_key,
    create_organization,
    create_user,
    ensure_default_organization,
    ensure_user,
    find_active_api_key,
    get_organization_by_name,
    get_user,
    list_api_keys,
    list_organizations,
    list_public_api_keys,
    revoke_api_key,
)


async def test_organizations(db: AsyncSession) -> None:
    default = await ensure_default_organization(db)
    assert default.name == "default"
    assert await ensure_default_organization(db) is default
    acme = await create_organization(db, "acme", "Acme Inc.")
    assert acme.id.startswith("org_") and acme.verbose_name == "Acme Inc."
    assert await get_organization_by_name(db, "acme") is acme
    assert await get_organization_by_name(db, "nope") is None
    assert [o.name for o in await list_organizations(db)] == ["default", "acme"]
    with pytest.raises(Conflict):
        await create_organization(db, "acme")


@pytest.mark.parametrize("name", ["Acme", "acme_inc", "-acme", "acme-", "", "a" * 64])
async def test_organization_names_are_slugs(db: AsyncSession, name: str) -> None:
    with pytest.raises(InvalidRequest):
        await create_organization(db, name)


async def test_users(db: AsyncSession) -> None:
    admin = await ensure_user(db, "Admin@Example.com ")
    assert admin.email == "admin@example.com"
    assert await ensure_user(db, "admin@example.com") is admin
    assert await get_user(db, admin.id) is admin
    with pytest.raises(Conflict):
        await create_user(db, "ADMIN@example.com")


async def test_api_keys_are_stored_hashed(db: AsyncSession, org: Organization) -> None:
    user = await ensure_user(db, "admin@example.com")
    admin, admin_raw = await create_api_key(db, org.id, "admin", "bootstrap", user_id=user.id)
    assert admin_raw.startswith("pcc_pat_") and admin.id.startswith("key_")
    assert admin.key_hash == hash_key(admin_raw) and admin.public_value is None
    assert admin.kind == ApiKeyKind.ADMIN and admin.user_id == user.id

    public, public_raw = await create_api_key(db, org.id, ApiKeyKind.PUBLIC, "web")
    assert public_raw.startswith("pk_") and public.public_value == public_raw

    found = await find_active_api_key(db, admin_raw)
    assert found is not None and found[0] is admin and found[1] is org
    assert await find_active_api_key(db, "sk_unknown") is None
    assert await find_active_api_key(db, admin.key_hash) is None  # the hash is not a key

    with pytest.raises(InvalidRequest):
        await create_api_key(db, org.id, "root", "x")


async def test_public_keys_listing_and_revocation(db: AsyncSession, org: Organization) -> None:
    other = await create_organization(db, "other")
    await create_api_key(db, other.id, "public", "not mine")
    await create_api_key(db, org.id, "private", "server")
    first, first_raw = await create_api_key(db, org.id, "public", "first")
    second, _ = await create_api_key(db, org.id, "public", "second")
    assert [k.name for k in await list_public_api_keys(db, org.id)] == ["first", "second"]
    assert len(await list_api_keys(db, org.id)) == 3

    assert await revoke_api_key(db, org.id, first.id)
    assert await revoke_api_key(db, org.id, first.id)  # idempotent
    assert first.revoked_at is not None
    assert await find_active_api_key(db, first_raw) is None
    assert [k.id for k in await list_public_api_keys(db, org.id)] == [second.id]
    keys = await list_public_api_keys(db, org.id, include_revoked=True)
    assert [k.id for k in keys] == [first.id, second.id]

    assert not await revoke_api_key(db, other.id, second.id)  # another org's key
    assert not await revoke_api_key(db, org.id, "key_missing")
