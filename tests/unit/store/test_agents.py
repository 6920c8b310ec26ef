"""Agents and deployments."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.errors import Conflict, InvalidRequest
from cattery.store.models import Agent, Deployment, Organization
from cattery.store.repositories import (
    create_agent,
    create_deployment,
    create_organization,
    get_agent,
    get_agent_by_id,
    get_deployment,
    list_agents,
    list_all_live_agents,
    list_deployments,
    set_active_deployment,
    set_deployment_environment,
    soft_delete_agent,
)


async def test_create_get_list(db: AsyncSession, org: Organization) -> None:
    bot = await create_agent(db, org.id, "bot", "us-west")
    eu = await create_agent(db, org.id, "another-bot", "eu-central")
    other = await create_organization(db, "other")
    await create_agent(db, other.id, "bot", "us-west")  # same name, other org: fine

    assert bot.id.startswith("agt_") and bot.active_deployment_id is None
    assert bot.created_at.tzinfo is not None
    assert await get_agent(db, org.id, "bot") is bot
    assert await get_agent(db, org.id, "missing") is None
    assert [a.name for a in await list_agents(db, org.id)] == ["another-bot", "bot"]
    assert await list_agents(db, org.id, region="eu-central") == [eu]
    assert len(await list_all_live_agents(db)) == 3
    with pytest.raises(Conflict):
        await create_agent(db, org.id, "bot", "us-west")


@pytest.mark.parametrize("name", ["My-Bot", "my_bot", "bot-", "a" * 64, ""])
async def test_agent_names_are_slugs(db: AsyncSession, org: Organization, name: str) -> None:
    with pytest.raises(InvalidRequest):
        await create_agent(db, org.id, name, "us-west")


async def test_soft_delete_frees_the_name(db: AsyncSession, org: Organization) -> None:
    old = await create_agent(db, org.id, "bot", "us-west")
    await soft_delete_agent(db, old)
    assert old.deleted_at is not None
    assert await get_agent(db, org.id, "bot") is None
    assert await list_agents(db, org.id) == []
    assert await get_agent_by_id(db, old.id) is old  # history still resolves
    new = await create_agent(db, org.id, "bot", "us-west")
    assert new.id != old.id
    assert await get_agent(db, org.id, "bot") is new


async def test_deployments(db: AsyncSession, agent: Agent) -> None:
    first = await create_deployment(
        db, agent.id, image="bot:1", region="us-west", min_agents=1, max_agents=3
    )
    second = await create_deployment(
        db,
        agent.id,
        image="bot:2",
        region="us-west",
        min_agents=0,
        max_agents=5,
        agent_profile="agent-2x",
        max_session_duration=600,
        secret_set="bot-secrets",
        build_id="build-7",
    )
    assert str(uuid.UUID(first.id)) == first.id
    assert first.backend == "local" and first.agent_profile == "agent-1x"
    assert first.max_session_duration == 7200 and first.environment_python is None
    assert [d.id for d in await list_deployments(db, agent.id)] == [second.id, first.id]
    assert await get_deployment(db, second.id) is second

    await set_active_deployment(db, agent, second.id)
    assert agent.active_deployment_id == second.id
    await set_deployment_environment(db, second, "/venvs/bot/bin/python")
    assert second.environment_python == "/venvs/bot/bin/python"


async def test_active_deployment_must_be_the_agents(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    stranger = await create_agent(db, org.id, "stranger", "us-west")
    with pytest.raises(InvalidRequest):
        await set_active_deployment(db, stranger, deployment.id)
    await set_active_deployment(db, agent, deployment.id)
    await set_active_deployment(db, agent, None)
    assert agent.active_deployment_id is None


async def test_deployment_scaling_is_checked(db: AsyncSession, agent: Agent) -> None:
    with pytest.raises(InvalidRequest):
        await create_deployment(db, agent.id, image="b:1", region="r", min_agents=3, max_agents=1)
    with pytest.raises(InvalidRequest):
        await create_deployment(
            db,
            agent.id,
            image="b:1",
            region="r",
            min_agents=0,
            max_agents=1,
            max_session_duration=0,
        )
