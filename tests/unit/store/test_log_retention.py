"""Stored log lines past their retention are deleted, oldest first, a batch at a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import Agent, Organization
from cattery.store.repositories import (
    NewLogLine,
    append_log_lines,
    delete_log_lines_before,
    list_log_lines,
)


async def test_old_lines_are_deleted(db: AsyncSession, org: Organization, agent: Agent) -> None:
    now = datetime.now(UTC)
    ages = [40, 31, 29, 1, 45]  # days
    await append_log_lines(
        db,
        [
            NewLogLine(
                organization_id=org.id,
                agent_id=agent.id,
                line=f"{age}d",
                ts=now - timedelta(days=age),
            )
            for age in ages
        ],
    )
    cutoff = now - timedelta(days=30)
    assert await delete_log_lines_before(db, cutoff, limit=2) == 2
    assert await delete_log_lines_before(db, cutoff, limit=2) == 1
    assert await delete_log_lines_before(db, cutoff, limit=2) == 0
    assert [r.line for r in await list_log_lines(db, agent.id)] == ["29d", "1d"]
