"""Bring a database to the newest schema, from code: no alembic.ini needed on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Connection

from cattery.store.db import create_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

#: any constant: makes concurrent control planes on one PostgreSQL migrate one at a time
_PG_MIGRATION_LOCK = 0x636174746572


def alembic_config() -> Config:
    """The Alembic configuration of the migrations shipped inside this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """The newest revision the package ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations shipped"
    return head


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(url: str | URL) -> None:
    """Upgrade the database at ``url`` to head; a no-op when it is already there."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


async def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at, or None before the first migration."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    finally:
        await engine.dispose()
