"""Organizations and users: the tenants, and the admin who owns the default one."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.errors import Conflict
from cattery.store.models import Organization, User
from cattery.store.repositories._validate import check_slug

DEFAULT_ORGANIZATION = "default"


async def get_organization(db: AsyncSession, organization_id: str) -> Organization | None:
    return await db.get(Organization, organization_id)


async def get_organization_by_name(db: AsyncSession, name: str) -> Organization | None:
    return await db.scalar(select(Organization).where(Organization.name == name))


async def list_organizations(db: AsyncSession) -> list[Organization]:
    """Oldest first: the CLI falls back to the first organization listed."""
    rows = await db.scalars(select(Organization).order_by(Organization.created_at, Organization.id))
    return list(rows)


async def create_organization(
    db: AsyncSession, name: str, verbose_name: str | None = None
) -> Organization:
    check_slug(name, "organization")
    if await get_organization_by_name(db, name) is not None:
        raise Conflict(f"Organization {name!r} already exists")
    organization = Organization(name=name, verbose_name=verbose_name or name)
    db.add(organization)
    await db.flush()
    return organization


async def ensure_default_organization(
    db: AsyncSession, name: str = DEFAULT_ORGANIZATION, verbose_name: str | None = None
) -> Organization:
    """The organization a fresh install works in, created on first start."""
    existing = await get_organization_by_name(db, name)
    if existing is not None:
        return existing
    return await create_organization(db, name, verbose_name or "Default organization")


async def get_user(db: AsyncSession, user_id: str) -> User | None:
    return await db.get(User, user_id)


async def get_user_by_email(db: AsyncSession, email: str) -> User | None:
    return await db.scalar(select(User).where(User.email == email.strip().lower()))


async def list_users(db: AsyncSession) -> list[User]:
    return list(await db.scalars(select(User).order_by(User.created_at, User.id)))


async def create_user(db: AsyncSession, email: str) -> User:
    email = email.strip().lower()
    if await get_user_by_email(db, email) is not None:
        raise Conflict(f"User {email!r} already exists")
    user = User(email=email)
    db.add(user)
    await db.flush()
    return user


async def ensure_user(db: AsyncSession, email: str) -> User:
    """The user with ``email``, created if missing (the admin of a fresh install)."""
    return await get_user_by_email(db, email) or await create_user(db, email)


async def set_default_region(db: AsyncSession, organization_id: str, region: str) -> None:
    """The organization's ``defaultRegion`` property."""
    org = await db.get(Organization, organization_id)
    if org is not None:
        org.default_region = region
        await db.flush()
