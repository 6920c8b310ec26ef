"""Keys and agents kept in memory: served until forgotten or expired, never stale after."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cattery.control.lookups import Lookups, _Entries
from cattery.errors import AgentNotFound
from cattery.store import create_engine, migrate, sessionmaker
from cattery.store import repositories as repo
from cattery.store.models import ApiKeyKind, Organization


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def maker(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    await migrate(database_url)
    engine = create_engine(database_url)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def org(maker: async_sessionmaker[AsyncSession]) -> Organization:
    async with maker.begin() as db:
        return await repo.create_organization(db, "acme")


async def test_a_key_is_served_from_memory_until_forgotten_or_expired(
    maker: async_sessionmaker[AsyncSession], org: Organization
) -> None:
    clock = Clock()
    lookups = Lookups(ttl=5.0, clock=clock)
    async with maker.begin() as db:
        key, raw = await repo.create_api_key(db, org.id, ApiKeyKind.PUBLIC, "app")
    found = await lookups.principal(maker, raw)
    assert found is not None and found.key_id == key.id and found.organization.name == "acme"
    assert await lookups.principal(maker, "pk_unknown") is None
    assert lookups.sizes() == (1, 0)  # misses are not kept

    async with maker.begin() as db:
        await repo.revoke_api_key(db, org.id, key.id)
    assert await lookups.principal(maker, raw) == found  # a change made behind its back...
    clock.now += 5.0
    assert await lookups.principal(maker, raw) is None  # ...is seen once the entry expires

    async with maker.begin() as db:
        key, raw = await repo.create_api_key(db, org.id, ApiKeyKind.PUBLIC, "app2")
    assert await lookups.principal(maker, raw) is not None
    async with maker.begin() as db:
        await repo.revoke_api_key(db, org.id, key.id)
    lookups.forget_keys(org.id)  # what the revoking handler does after its commit
    assert await lookups.principal(maker, raw) is None


async def test_an_agent_is_served_from_memory_until_forgotten(
    maker: async_sessionmaker[AsyncSession], org: Organization
) -> None:
    lookups = Lookups(ttl=60.0)
    async with maker() as db:
        with pytest.raises(AgentNotFound):
            await lookups.agent(maker, org, "bot")
    async with maker.begin() as db:
        agent = await repo.create_agent(db, org.id, "bot", "local")
        dep = await repo.create_deployment(
            db, agent.id, image="/x", region="local", min_agents=0, max_agents=1
        )
        await repo.set_active_deployment(db, agent, dep.id)
    async with maker() as db:
        target = await lookups.agent(maker, org, "bot")
    assert (target.agent_id, target.deployment_id) == (agent.id, dep.id)
    assert target.max_session_duration == dep.max_session_duration

    async with maker.begin() as db:
        agent = await repo.get_agent(db, org.id, "bot")
        assert agent is not None
        newer = await repo.create_deployment(
            db,
            agent.id,
            image="/x",
            region="local",
            min_agents=0,
            max_agents=1,
            max_session_duration=60,
        )
        await repo.set_active_deployment(db, agent, newer.id)
    async with maker() as db:
        assert (await lookups.agent(maker, org, "bot")).deployment_id == dep.id
        lookups.forget_agent(org.id, "bot")
        target = await lookups.agent(maker, org, "bot")
    assert (target.deployment_id, target.max_session_duration) == (newer.id, 60)

    async with maker.begin() as db:
        agent = await repo.get_agent(db, org.id, "bot")
        assert agent is not None
        await repo.soft_delete_agent(db, agent)
    lookups.forget_agent(org.id)
    async with maker() as db:
        with pytest.raises(AgentNotFound):
            await lookups.agent(maker, org, "bot")


def test_a_value_read_before_a_change_is_not_kept() -> None:
    entries: _Entries[str, int] = _Entries(ttl=60.0, max_entries=2, clock=Clock())
    generation = entries.generation  # a lookup starts reading...
    entries.forget(lambda *_: True)  # ...a change lands meanwhile...
    entries.put("a", 1, generation)  # ...so what it read may be stale
    assert entries.get("a") is None
    entries.put("a", 1, entries.generation)
    entries.put("b", 2, entries.generation)
    entries.put("c", 3, entries.generation)  # bounded: the oldest goes
    assert (entries.get("a"), entries.get("b"), entries.get("c")) == (None, 2, 3)


async def test_an_entry_in_use_is_read_again_before_it_expires(
    maker: async_sessionmaker[AsyncSession], org: Organization
) -> None:
    """A start never waits for the database for a key or agent in steady use; a change
    made behind the cache's back is still seen within the ttl."""
    from tests.support.waiting import async_wait_for

    clock = Clock()
    lookups = Lookups(ttl=10.0, clock=clock)
    async with maker.begin() as db:
        key, raw = await repo.create_api_key(db, org.id, ApiKeyKind.PUBLIC, "app")
        agent = await repo.create_agent(db, org.id, "bot", "local")
        dep = await repo.create_deployment(
            db, agent.id, image="/x", region="local", min_agents=0, max_agents=1
        )
        await repo.set_active_deployment(db, agent, dep.id)
    assert (await lookups.agent(maker, org, "bot")).deployment_id == dep.id
    assert await lookups.principal(maker, raw) is not None
    async with maker.begin() as db:
        agent = await repo.get_agent(db, org.id, "bot")
        assert agent is not None
        newer = await repo.create_deployment(
            db, agent.id, image="/x", region="local", min_agents=0, max_agents=1
        )
        await repo.set_active_deployment(db, agent, newer.id)
        await repo.revoke_api_key(db, org.id, key.id)

    clock.now += 6.0  # the second half of the entries' life: served, and read again
    assert (await lookups.agent(maker, org, "bot")).deployment_id == dep.id
    assert await lookups.principal(maker, raw) is not None

    async def renewed() -> bool:
        return (await lookups.agent(maker, org, "bot")).deployment_id == newer.id

    await async_wait_for(renewed, timeout=10, what="the agent read again")
    await async_wait_for(
        lambda: _is_none(lookups.principal(maker, raw)), timeout=10, what="the key dropped"
    )
    clock.now += 6.0  # past the first read's expiry: the renewed entry is still served
    assert lookups.sizes() == (0, 1)
    assert (await lookups.agent(maker, org, "bot")).deployment_id == newer.id
    await lookups.aclose()


async def _is_none(value) -> bool:
    return (await value) is None
