"""An organization's API keys: made and revoked the same way by the API and the dashboard."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.control.state import ControlState
from cattery.errors import InvalidRequest, NotFound
from cattery.store import repositories as repo
from cattery.store.models import ApiKey, ApiKeyKind, Organization

#: the kinds of key a caller may make (the admin token is made only at bootstrap)
CREATABLE_KINDS = (ApiKeyKind.PUBLIC.value, ApiKeyKind.PRIVATE.value)


async def create_key(
    db: AsyncSession, org: Organization, kind: str, name: str, *, user_id: str | None
) -> tuple[ApiKey, str]:
    """A new key and its raw value, which is shown once and stored only hashed."""
    if kind not in CREATABLE_KINDS:
        raise InvalidRequest(f"Unknown key type {kind!r}: use public or private")
    name = name.strip()
    if not name or len(name) > 255:
        raise InvalidRequest("A key needs a name of 1-255 characters")
    return await repo.create_api_key(db, org.id, kind, name, user_id=user_id)


async def revoke_key(state: ControlState, db: AsyncSession, org: Organization, key_id: str) -> None:
    """Revoke one of the organization's keys; its next request is refused."""
    if not await repo.revoke_api_key(db, org.id, key_id):
        raise NotFound(f"API key {key_id!r} not found")
    await db.commit()  # then forgotten: a lookup in between can't keep the old row
    state.lookups.forget_keys(org.id)
