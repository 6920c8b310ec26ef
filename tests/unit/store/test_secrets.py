"""Secret sets: values round-trip through the SecretBox and never hit disk in clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cattery.errors import Conflict, InvalidRequest
from cattery.store import SecretBox
from cattery.store.models import Organization, Secret, SecretSetKind
from cattery.store.repositories import (
    create_api_key,
    delete_secret,
    delete_secret_set,
    get_secret_set,
    get_secret_values,
    list_secret_keys,
    list_secret_sets,
    upsert_secret,
)


async def test_upsert_list_and_decrypt(db: AsyncSession, box: SecretBox, org: Organization) -> None:
    created = await upsert_secret(db, box, org.id, "bot-secrets", "API_KEY", "v1", region="us")
    same = await upsert_secret(db, box, org.id, "bot-secrets", "other-key", "x", region="us")
    assert same is created and created.kind == SecretSetKind.SECRET_SET
    await upsert_secret(db, box, org.id, "bot-secrets", "API_KEY", "v2", region="us")
    assert await get_secret_set(db, org.id, "bot-secrets") is created
    assert await list_secret_keys(db, created) == ["API_KEY", "other-key"]
    assert await get_secret_values(db, box, created) == {"API_KEY": "v2", "other-key": "x"}
    stored = await db.scalars(select(Secret.value_encrypted))
    # Fernet tokens, never the values (a base64 token may contain "v2" by chance)
    assert all(value.startswith("gAAAA") and value not in ("v2", "x") for value in stored)


async def test_sets_by_kind(db: AsyncSession, box: SecretBox, org: Organization) -> None:
    await upsert_secret(db, box, org.id, "b-set", "K", "v", region="us")
    await upsert_secret(db, box, org.id, "a-pull", "auth", "t", region="us", kind="imagePullSecret")
    assert [s.name for s in await list_secret_sets(db, org.id)] == ["a-pull", "b-set"]
    pulls = await list_secret_sets(db, org.id, kind=SecretSetKind.IMAGE_PULL_SECRET)
    assert [s.name for s in pulls] == ["a-pull"]
    with pytest.raises(Conflict):
        await upsert_secret(db, box, org.id, "a-pull", "K", "v", region="us")


@pytest.mark.parametrize("key", ["", "has space", "dot.ted", "k" * 65, "é"])
async def test_secret_keys_are_checked(
    db: AsyncSession, box: SecretBox, org: Organization, key: str
) -> None:
    with pytest.raises(InvalidRequest):
        await upsert_secret(db, box, org.id, "set", key, "v", region="us")


async def test_delete_key_and_set(db: AsyncSession, box: SecretBox, org: Organization) -> None:
    await upsert_secret(db, box, org.id, "set", "A", "1", region="us")
    secret_set = await upsert_secret(db, box, org.id, "set", "B", "2", region="us")
    assert await delete_secret(db, secret_set, "A")
    assert not await delete_secret(db, secret_set, "A")
    assert await list_secret_keys(db, secret_set) == ["B"]
    await delete_secret_set(db, secret_set)
    assert await get_secret_set(db, org.id, "set") is None
    assert list(await db.scalars(select(Secret))) == []


async def test_sets_are_per_organization(
    db: AsyncSession, box: SecretBox, org: Organization
) -> None:
    await upsert_secret(db, box, org.id, "set", "A", "1", region="us")
    other = Organization(name="other", verbose_name="Other")
    db.add(other)
    await db.flush()
    assert await get_secret_set(db, other.id, "set") is None
    assert await list_secret_sets(db, other.id) == []


def _found_in(files: list[Path], needles: list[str]) -> list[str]:
    """Which needles appear, byte for byte, in which existing files."""
    return [
        f"{needle} in {path.name}"
        for path in files
        if path.exists()
        for needle in needles
        if needle.encode() in path.read_bytes()
    ]


async def test_no_plaintext_on_disk(
    engine: AsyncEngine, db: AsyncSession, box: SecretBox, org: Organization, is_sqlite: bool
) -> None:
    if not is_sqlite:
        pytest.skip("reads the SQLite files")
    value = "plaintext-canary-7f3a9c"
    await upsert_secret(db, box, org.id, "set", "TOKEN_NAME", value, region="us")
    _, private_raw = await create_api_key(db, org.id, "private", "server")
    await db.commit()

    database = Path(make_url(engine.url).database or "")
    wal = database.with_name(database.name + "-wal")
    assert _found_in([wal], ["TOKEN_NAME"]), "the committed rows should be in the WAL"
    assert _found_in([database, wal], [value, private_raw]) == []

    await engine.dispose()  # checkpoints the WAL into the main file
    assert _found_in([database], ["TOKEN_NAME"])  # so the check below would see plaintext
    assert _found_in([database, wal], [value, private_raw]) == []
