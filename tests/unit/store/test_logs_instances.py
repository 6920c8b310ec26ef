"""Log lines and the instance records used to reattach after a restart."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store import SecretBox
from cattery.store.models import Agent, Deployment, Instance, Organization
from cattery.store.repositories import (
    KEEP,
    InstanceFacts,
    NewLogLine,
    append_log_lines,
    delete_instance,
    get_instance,
    instance_token,
    list_live_instances,
    list_log_lines,
    update_instance,
    upsert_instance,
)


async def test_log_lines(db: AsyncSession, org: Organization, agent: Agent) -> None:
    def line(text: str, **ids: str) -> NewLogLine:
        return NewLogLine(organization_id=org.id, agent_id=agent.id, line=text, **ids)

    assert await append_log_lines(db, []) == 0
    count = await append_log_lines(
        db,
        [
            line("boot", deployment_id="d1", instance_id="i1"),
            line("hello", deployment_id="d1", session_id="s1"),
            line("world", deployment_id="d2", session_id="s2"),
            line("bye", deployment_id="d2", session_id="s1"),
            NewLogLine(organization_id=org.id, agent_id="agt_other", line="elsewhere"),
        ],
    )
    assert count == 5
    assert [r.line for r in await list_log_lines(db, agent.id)] == [
        "boot",
        "hello",
        "world",
        "bye",
    ]
    assert [r.line for r in await list_log_lines(db, agent.id, limit=2)] == ["world", "bye"]
    assert [r.line for r in await list_log_lines(db, agent.id, session_id="s1")] == [
        "hello",
        "bye",
    ]
    assert [r.line for r in await list_log_lines(db, agent.id, deployment_id="d2")] == [
        "world",
        "bye",
    ]
    rows = await list_log_lines(db, agent.id, session_id="s1", deployment_id="d1")
    assert [r.line for r in rows] == ["hello"]
    assert rows[0].ts.tzinfo is not None and rows[0].id > 0


async def test_log_line_timestamp_is_kept(
    db: AsyncSession, org: Organization, agent: Agent
) -> None:
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    await append_log_lines(
        db, [NewLogLine(organization_id=org.id, agent_id=agent.id, line="x", ts=at)]
    )
    assert [r.ts for r in await list_log_lines(db, agent.id)] == [at]


async def test_instances(
    db: AsyncSession, box: SecretBox, agent: Agent, deployment: Deployment
) -> None:
    fields = {
        "agent_id": agent.id,
        "deployment_id": deployment.id,
        "backend": "local",
        "address": "127.0.0.1:40001",
        "token": "instance-token-canary",
    }
    first = await upsert_instance(
        db,
        box,
        "inst-1",
        InstanceFacts(status="starting", pid=4242, process_started_at=1.5e9, **fields),
    )
    await upsert_instance(db, box, "inst-2", InstanceFacts(status="ready", **fields))
    await upsert_instance(db, box, "inst-3", InstanceFacts(status="stopped", **fields))
    assert first.token_encrypted != "instance-token-canary"
    assert instance_token(box, first) == "instance-token-canary"

    again = await upsert_instance(
        db, box, "inst-1", InstanceFacts(status="ready", log_offset=10, **fields)
    )
    assert again is first and first.status == "ready" and first.log_offset == 10
    assert first.pid is None  # an upsert writes every field

    live = await list_live_instances(db)
    assert [i.id for i in live] == ["inst-1", "inst-2"]
    assert await list_live_instances(db, backend="ray") == []

    assert await update_instance(db, "inst-2", session_id="s1", log_offset=99)
    inst2 = await get_instance(db, "inst-2")
    assert inst2 is not None and (inst2.session_id, inst2.log_offset) == ("s1", 99)
    assert inst2.status == "ready"
    assert await update_instance(db, "inst-2", session_id=None, status=KEEP)
    assert inst2.session_id is None
    assert not await update_instance(db, "missing", status="failed")

    assert await delete_instance(db, "inst-1")
    assert not await delete_instance(db, "inst-1")
    assert await get_instance(db, "inst-1") is None
    assert len(list(await db.scalars(select(Instance)))) == 2
