"""Organizations' own agent profiles (the built-in ones live in code)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import AgentProfile
from cattery.store.types import utcnow


async def list_agent_profiles(db: AsyncSession, organization_id: str) -> list[AgentProfile]:
    query = select(AgentProfile).where(AgentProfile.organization_id == organization_id)
    return list(await db.scalars(query.order_by(AgentProfile.name)))


async def get_agent_profile(
    db: AsyncSession, organization_id: str, name: str
) -> AgentProfile | None:
    return await db.scalar(
        select(AgentProfile).where(
            AgentProfile.organization_id == organization_id, AgentProfile.name == name
        )
    )


async def create_agent_profile(
    db: AsyncSession, organization_id: str, *, name: str, display_name: str, cpu: str, memory: str
) -> AgentProfile:
    profile = AgentProfile(
        organization_id=organization_id,
        name=name,
        display_name=display_name,
        cpu=cpu,
        memory=memory,
        enabled=True,
    )
    db.add(profile)
    await db.flush()
    return profile


async def update_agent_profile(db: AsyncSession, profile: AgentProfile, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(profile, name, value)
    profile.updated_at = utcnow()
    await db.flush()
