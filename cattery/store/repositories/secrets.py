"""Secret sets and their values, encrypted with a SecretBox before they reach the database."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.errors import Conflict, InvalidRequest
from cattery.store.crypto import SecretBox
from cattery.store.models import Secret, SecretSet, SecretSetKind
from cattery.store.repositories._validate import check_secret_key
from cattery.store.types import utcnow


async def get_secret_set(db: AsyncSession, organization_id: str, name: str) -> SecretSet | None:
    return await db.scalar(
        select(SecretSet).where(
            SecretSet.organization_id == organization_id, SecretSet.name == name
        )
    )


async def list_secret_sets(
    db: AsyncSession, organization_id: str, kind: SecretSetKind | str | None = None
) -> list[SecretSet]:
    """The organization's sets by name, optionally of one kind."""
    query = select(SecretSet).where(SecretSet.organization_id == organization_id)
    if kind is not None:
        query = query.where(SecretSet.kind == SecretSetKind(kind).value)
    return list(await db.scalars(query.order_by(SecretSet.name)))


async def upsert_secret(
    db: AsyncSession,
    box: SecretBox,
    organization_id: str,
    set_name: str,
    key: str,
    value: str,
    *,
    region: str,
    kind: SecretSetKind | str = SecretSetKind.SECRET_SET,
) -> SecretSet:
    """Set one value, creating the set on its first key; only ciphertext is stored.

    Conflict if a set of this name exists with the other kind.
    """
    check_secret_key(key)
    if not set_name or len(set_name) > 255:
        raise InvalidRequest("Invalid secret set name")
    kind = SecretSetKind(kind)
    secret_set = await get_secret_set(db, organization_id, set_name)
    if secret_set is None:
        secret_set = SecretSet(
            organization_id=organization_id, name=set_name, region=region, kind=kind.value
        )
        db.add(secret_set)
        await db.flush()
    elif secret_set.kind != kind.value:
        raise Conflict(f"Secret set {set_name!r} exists as a {secret_set.kind}")
    secret = await db.scalar(
        select(Secret).where(Secret.secret_set_id == secret_set.id, Secret.key == key)
    )
    now = utcnow()
    if secret is None:
        db.add(Secret(secret_set_id=secret_set.id, key=key, value_encrypted=box.encrypt(value)))
    else:
        secret.value_encrypted = box.encrypt(value)
        secret.updated_at = now
    secret_set.updated_at = now
    await db.flush()
    return secret_set


async def list_secret_keys(db: AsyncSession, secret_set: SecretSet) -> list[str]:
    """The set's key names, sorted; values are never listed."""
    query = select(Secret.key).where(Secret.secret_set_id == secret_set.id).order_by(Secret.key)
    return list(await db.scalars(query))


async def delete_secret(db: AsyncSession, secret_set: SecretSet, key: str) -> bool:
    """Remove one key; False if the set has no such key."""
    result = await db.execute(
        delete(Secret).where(Secret.secret_set_id == secret_set.id, Secret.key == key)
    )
    if not result.rowcount:
        return False
    secret_set.updated_at = utcnow()
    await db.flush()
    return True


async def delete_secret_set(db: AsyncSession, secret_set: SecretSet) -> None:
    """Remove the set and all its values."""
    await db.execute(delete(Secret).where(Secret.secret_set_id == secret_set.id))
    await db.delete(secret_set)
    await db.flush()


async def get_secret_values(
    db: AsyncSession, box: SecretBox, secret_set: SecretSet
) -> dict[str, str]:
    """The set's decrypted ``{key: value}``: the environment handed to an instance."""
    rows = await db.execute(
        select(Secret.key, Secret.value_encrypted).where(Secret.secret_set_id == secret_set.id)
    )
    return {key: box.decrypt(ciphertext) for key, ciphertext in rows}
