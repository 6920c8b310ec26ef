"""A freshly migrated database per test.

Each test runs twice, through ``database_url`` (tests/conftest.py): on a SQLite file in a
temp folder, and on its own throwaway PostgreSQL database (``CATTERY_TEST_DATABASE_URL``
names the server, else a private one is started; without one those variants are skipped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cattery.store import SecretBox, create_engine, migrate, normalize_url, sessionmaker
from cattery.store.models import Agent, Deployment, Organization
from cattery.store.repositories import (
    create_agent,
    create_deployment,
    create_organization,
)


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
