"""Regions: the upsert that keeps omitted fields, what keeps one from being deleted, and
enroll tokens that are exchanged at most once and never after they expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.errors import InvalidRequest
from cattery.store import hash_key
from cattery.store.models import Agent, Deployment, Organization
from cattery.store.repositories import (
    RegionUse,
    create_agent,
    create_deployment,
    create_enroll_token,
    create_session,
    delete_region,
    delete_spent_enroll_tokens,
    end_session,
    ensure_regions,
    get_organization,
    get_region,
    list_regions,
    region_use,
    set_active_deployment,
    set_default_region,
    soft_delete_agent,
    upsert_region,
    use_enroll_token,
)
from cattery.store.types import utcnow


async def test_register_keeps_what_is_omitted(db: AsyncSession) -> None:
    region, created = await upsert_region(
        db, "eu-lab", display_name="EU lab", supported_architectures=["amd64"]
    )
    assert created and region.display_name == "EU lab"
    region, created = await upsert_region(db, "eu-lab", ws_public_endpoint="wss://eu.test")
    assert not created
    assert region.display_name == "EU lab" and region.supported_architectures == ["amd64"]
    assert region.ws_public_endpoint == "wss://eu.test"
    with pytest.raises(InvalidRequest):
        await upsert_region(db, "EU_lab")


async def test_settings_seed_only_what_is_missing(db: AsyncSession) -> None:
    await upsert_region(db, "local", display_name="Here")
    assert await ensure_regions(db, ["local", "eu-lab", "us-lab"]) == ["eu-lab", "us-lab"]
    assert await ensure_regions(db, ["local", "eu-lab"]) == []
    assert [r.key for r in await list_regions(db)] == ["local", "eu-lab", "us-lab"]
    assert (await get_region(db, "local")).display_name == "Here"


async def test_agents_and_live_sessions_hold_a_region(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    await ensure_regions(db, ["us-west", "eu-lab"])
    assert (await region_use(db, "us-west")).agents == 1
    assert await region_use(db, "eu-lab") == RegionUse(agents=0, live_sessions=0)
    session = await create_session(
        db, organization_id=org.id, agent_id=agent.id, deployment_id=deployment.id
    )
    await soft_delete_agent(db, agent)
    use = await region_use(db, "us-west")
    assert (use.agents, use.live_sessions) == (0, 1)
    await end_session(db, session.id, "completed")
    assert (await region_use(db, "us-west")).live_sessions == 0


async def test_an_agent_moved_by_its_deployment_holds_that_region(
    db: AsyncSession, org: Organization
) -> None:
    moved = await create_agent(db, org.id, "moved", "us-west")
    dep = await create_deployment(
        db, moved.id, image="x", region="eu-lab", min_agents=0, max_agents=1
    )
    await set_active_deployment(db, moved, dep.id)
    assert (await region_use(db, "eu-lab")).agents == 1


async def test_delete_forgets_tokens_and_defaults(db: AsyncSession, org: Organization) -> None:
    await ensure_regions(db, ["eu-lab"])
    await set_default_region(db, org.id, "eu-lab")
    await create_enroll_token(db, "eu-lab", hash_key("t"), utcnow() + timedelta(hours=1))
    assert await delete_region(db, "eu-lab")
    assert not await delete_region(db, "eu-lab")
    await db.refresh(org)
    assert (await get_organization(db, org.id)).default_region is None
    assert await use_enroll_token(db, hash_key("t")) is None


async def test_enroll_token_is_exchanged_once_and_not_after_expiry(db: AsyncSession) -> None:
    await ensure_regions(db, ["eu-lab"])
    now = utcnow()
    await create_enroll_token(db, "eu-lab", hash_key("fresh"), now + timedelta(minutes=5))
    await create_enroll_token(db, "eu-lab", hash_key("stale"), now + timedelta(seconds=1))
    await upsert_region(db, "us-lab")
    await create_enroll_token(db, "us-lab", hash_key("us"), now + timedelta(minutes=5))
    assert (await get_region(db, "us-lab")).enrolled_at is None
    assert await use_enroll_token(db, hash_key("us"), now) == "us-lab"
    db.expire_all()
    assert (await get_region(db, "us-lab")).enrolled_at == now
    assert await use_enroll_token(db, hash_key("fresh"), now) == "eu-lab"
    assert await use_enroll_token(db, hash_key("fresh"), now) is None
    assert await use_enroll_token(db, hash_key("stale"), now + timedelta(seconds=2)) is None
    assert await use_enroll_token(db, hash_key("never minted"), now) is None
    assert await delete_spent_enroll_tokens(db, now + timedelta(seconds=2)) == 3
