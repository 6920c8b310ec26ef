"""Migrations, engine settings and the column types every table relies on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

import cattery.store
from cattery.store import (
    create_engine,
    current_revision,
    head_revision,
    migrate,
    normalize_url,
    sessionmaker,
)
from cattery.store.migrate import MIGRATIONS_DIR
from cattery.store.models import Agent, Base, Organization
from cattery.store.repositories import NewLogLine, append_log_lines, list_log_lines

TABLES = {
    "organizations",
    "users",
    "api_keys",
    "agents",
    "deployments",
    "secret_sets",
    "secrets",
    "sessions",
    "resource_samples",
    "session_latency",
    "webhook_deliveries",
    "log_lines",
    "instances",
    "builds",
    "build_log_lines",
    "agent_profiles",
    "regions",
    "enroll_tokens",
}


async def test_migrate_twice_is_a_no_op(database_url: str) -> None:
    assert await current_revision(database_url) is None
    await migrate(database_url)
    await migrate(database_url)
    assert await current_revision(database_url) == head_revision()
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            versions = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    finally:
        await engine.dispose()
    assert TABLES <= tables
    assert versions == [(head_revision(),)]


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    def diff(sync_conn) -> list:  # type: ignore[no-untyped-def]
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_sqlite_engine_settings(engine: AsyncEngine, is_sqlite: bool) -> None:
    if not is_sqlite:
        pytest.skip("SQLite only")
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
        assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() >= 1000


async def test_timestamps_come_back_aware_utc(db: AsyncSession) -> None:
    paris = timezone(timedelta(hours=2))
    org = Organization(
        name="tz", verbose_name="tz", created_at=datetime(2024, 6, 1, 12, 0, tzinfo=paris)
    )
    db.add(org)
    await db.commit()
    db.expunge_all()
    loaded = await db.get(Organization, org.id)
    assert loaded is not None
    assert loaded.created_at == datetime(2024, 6, 1, 10, 0, tzinfo=UTC)
    assert loaded.created_at.utcoffset() == timedelta(0)


async def test_naive_timestamps_are_refused(db: AsyncSession) -> None:
    db.add(Organization(name="naive", verbose_name="n", created_at=datetime(2024, 1, 1)))
    with pytest.raises(Exception, match="naive datetime"):
        await db.flush()


def test_plain_urls_get_async_drivers() -> None:
    assert normalize_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+asyncpg"
    assert normalize_url("sqlite+aiosqlite:///x.db").drivername == "sqlite+aiosqlite"


def test_migrations_ship_inside_the_package() -> None:
    package = Path(cattery.store.__file__).parent
    assert MIGRATIONS_DIR.parent == package
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("*.py"))


async def test_concurrent_writers_wait_instead_of_failing(
    engine: AsyncEngine, org: Organization, agent: Agent, db: AsyncSession
) -> None:
    await db.commit()
    make_session = sessionmaker(engine)

    async def writer(n: int) -> None:
        async with make_session() as session:
            await list_log_lines(session, agent.id, limit=1)  # read, then write
            lines = [
                NewLogLine(organization_id=org.id, agent_id=agent.id, line=f"{n}-{i}")
                for i in range(20)
            ]
            await append_log_lines(session, lines)
            await session.commit()

    await asyncio.gather(*(writer(n) for n in range(12)))
    async with make_session() as session:
        assert len(await list_log_lines(session, agent.id, limit=1000)) == 240
