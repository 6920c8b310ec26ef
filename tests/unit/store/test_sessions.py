"""Sessions, their lifecycle updates and resource samples."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import Agent, Deployment, EndState, Organization
from cattery.store.repositories import (
    add_resource_sample,
    add_session_event,
    count_active_sessions,
    create_agent,
    create_session,
    end_session,
    get_session,
    get_session_by_id,
    list_resource_samples,
    list_sessions,
    list_unended_sessions,
    mark_bot_started,
)


async def _new(db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment):  # type: ignore[no-untyped-def]
    return await create_session(
        db, organization_id=org.id, agent_id=agent.id, deployment_id=deployment.id
    )


async def test_create_and_get(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    session = await _new(db, org, agent, deployment)
    assert str(uuid.UUID(session.id)) == session.id
    assert session.events == [] and session.ended_at is None
    chosen = str(uuid.uuid4())
    webrtc = await create_session(
        db,
        organization_id=org.id,
        agent_id=agent.id,
        deployment_id=deployment.id,
        session_id=chosen,
        transport="webrtc",
        instance_id="inst-1",
    )
    assert webrtc.id == chosen and webrtc.transport == "webrtc"
    assert await get_session(db, org.id, agent.id, chosen) is webrtc
    assert await get_session(db, org.id, "agt_other", chosen) is None
    assert await get_session(db, "org_other", agent.id, chosen) is None
    assert await get_session(db, org.id, agent.id, str(uuid.uuid4())) is None
    assert await get_session_by_id(db, chosen) is webrtc


async def test_lifecycle(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    session = await _new(db, org, agent, deployment)
    assert await count_active_sessions(db, agent.id) == 1
    assert await mark_bot_started(
        db, session.id, bot_start_seconds=0.25, cold_start=True, instance_id="inst-9"
    )
    assert not await mark_bot_started(db, session.id, bot_start_seconds=9, cold_start=False)
    assert session.bot_start_seconds == 0.25 and session.cold_start is True
    assert session.instance_id == "inst-9" and session.bot_started_at is not None

    assert await end_session(db, session.id, EndState.COMPLETED, completion_status="ok")
    assert not await end_session(db, session.id, "terminated")  # the first end wins
    assert session.end_state == "completed" and session.completion_status == "ok"
    assert session.ended_at is not None and session.ended_at.tzinfo is not None
    assert await count_active_sessions(db, agent.id) == 0

    db.expunge_all()
    reloaded = await get_session_by_id(db, session.id)
    assert reloaded is not None and reloaded.end_state == "completed"


async def test_an_end_reason_is_kept_and_bounded(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    session = await _new(db, org, agent, deployment)
    assert await end_session(db, session.id, "agent_error", reason="its node is gone " * 200)
    db.expunge_all()
    reloaded = await get_session_by_id(db, session.id)
    assert reloaded is not None and reloaded.end_reason is not None
    assert reloaded.end_reason.startswith("its node is gone") and len(reloaded.end_reason) == 1000


async def test_bot_start_after_end_is_ignored(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    session = await _new(db, org, agent, deployment)
    assert await end_session(db, session.id, "ended_before_agent_start")
    assert not await mark_bot_started(db, session.id, bot_start_seconds=1, cold_start=False)
    assert session.bot_started_at is None


async def test_events(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    session = await _new(db, org, agent, deployment)
    at = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    await add_session_event(db, session, "SESSION_STARTED", at)
    await add_session_event(db, session, "BOT_STARTED")
    await db.commit()
    db.expunge_all()
    reloaded = await get_session_by_id(db, session.id)
    assert reloaded is not None
    assert [e["eventCode"] for e in reloaded.events] == ["SESSION_STARTED", "BOT_STARTED"]
    assert reloaded.events[0]["eventTs"] == at.isoformat()


async def test_listing(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    sessions = [await _new(db, org, agent, deployment) for _ in range(4)]
    other_agent = await create_agent(db, org.id, "other", "us-west")
    await create_session(
        db, organization_id=org.id, agent_id=other_agent.id, deployment_id=deployment.id
    )
    await end_session(db, sessions[0].id, "completed")
    await end_session(db, sessions[1].id, "agent_error")

    newest_first = [s.id for s in reversed(sessions)]
    assert [s.id for s in await list_sessions(db, agent.id)] == newest_first
    assert [s.id for s in await list_sessions(db, agent.id, limit=2)] == newest_first[:2]
    assert [s.id for s in await list_sessions(db, agent.id, end_state="agent_error")] == [
        sessions[1].id
    ]
    active = await list_sessions(db, agent.id, end_state="active")
    assert [s.id for s in active] == newest_first[:2]
    assert len(await list_unended_sessions(db)) == 3


async def test_resource_samples(
    db: AsyncSession, org: Organization, agent: Agent, deployment: Deployment
) -> None:
    session = await _new(db, org, agent, deployment)
    other = await _new(db, org, agent, deployment)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    await add_resource_sample(db, session.id, 120.0, 5 * 2**30, t=start + timedelta(seconds=5))
    await add_resource_sample(db, session.id, 80.5, 100_000_000, t=start)
    await add_resource_sample(db, other.id, 1.0, 1)
    samples = await list_resource_samples(db, session.id)
    assert [(s.t, s.cpu_millicores, s.memory_bytes) for s in samples] == [
        (start, 80.5, 100_000_000),
        (start + timedelta(seconds=5), 120.0, 5 * 2**30),
    ]
