"""Setting and unsetting one secret, as the API and the dashboard both do it.

Values go in encrypted and never come back out: readers get set names and keys only.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.control.state import ControlState
from cattery.control.validation import (
    check_secret_key,
    check_secret_sizes,
    check_set_name,
    check_text,
)
from cattery.errors import NotFound
from cattery.store import repositories as repo
from cattery.store.models import Organization, SecretSetKind


async def set_secrets(
    state: ControlState,
    db: AsyncSession,
    org: Organization,
    set_name: str,
    pairs: list[tuple[str, str]],
    *,
    region: str | None = None,
    kind: SecretSetKind = SecretSetKind.SECRET_SET,
) -> None:
    """Set each ``(key, value)`` in the set, making the set on its first key; the set's
    values, old and new, must stay within their size limits."""
    check_set_name(set_name)
    for key, _ in pairs:
        check_secret_key(key)
    region = check_text("region", region or state.settings.default_region, max_chars=64)
    existing = await repo.get_secret_set(db, org.id, set_name)
    values = await repo.get_secret_values(db, state.box, existing) if existing else {}
    check_secret_sizes({**values, **dict(pairs)})
    for key, value in pairs:
        await repo.upsert_secret(
            db, state.box, org.id, set_name, key, value, region=region, kind=kind
        )


async def unset_secret(db: AsyncSession, org: Organization, set_name: str, key: str) -> None:
    found = await repo.get_secret_set(db, org.id, set_name)
    if found is None or not await repo.delete_secret(db, found, key):
        raise NotFound(f"Secret {key!r} not found in set {set_name!r}")


async def secret_keys(db: AsyncSession, org: Organization) -> list[tuple[str, str, list[str]]]:
    """Every set of the organization as ``(name, kind, keys)``: never a value."""
    return [
        (s.name, s.kind, await repo.list_secret_keys(db, s))
        for s in await repo.list_secret_sets(db, org.id)
    ]
