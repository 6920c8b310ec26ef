"""A freshly migrated database per test.

SQLite in a temp file by default. Set ``CATTERY_TEST_DATABASE_URL`` to a PostgreSQL URL
(``postgresql+asyncpg://user:pw@host/postgres``; the role needs CREATEDB) to run the same
tests there: each test then gets its own throwaway database on that server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cattery.store import SecretBox, create_engine, migrate, normalize_url, sessionmaker
from cattery.store.models import Agent, Deployment, Organization
from cattery.store.repositories import (
    create_agent,
    create_deployment,
    create_organization,
)

TEST_DATABASE_URL_ENV = "CATTERY_TEST_DATABASE_URL"


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    """An empty database's URL, dropped after the test."""
    configured = os.environ.get(TEST_DATABASE_URL_ENV)
    if not configured or normalize_url(configured).get_backend_name() == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'cattery.db'}"
        return
    server = normalize_url(configured)
    name = f"cattery_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server.set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


@pytest.fixture
def is_sqlite(database_url: str) -> bool:
    return normalize_url(database_url).get_backend_name() == "sqlite"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate(database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with sessionmaker(engine)() as session:
        yield session


@pytest.fixture
def box() -> SecretBox:
    return SecretBox("a passphrase for tests only")


@pytest.fixture
async def org(db: AsyncSession) -> Organization:
    return await create_organization(db, "acme", "Acme Inc.")


@pytest.fixture
async def agent(db: AsyncSession, org: Organization) -> Agent:
    return await create_agent(db, org.id, "my-bot", "us-west")


@pytest.fixture
async def deployment(db: AsyncSession, agent: Agent) -> Deployment:
    return await create_deployment(
        db, agent.id, image="my-bot:1", region="us-west", min_agents=0, max_agents=2
    )
