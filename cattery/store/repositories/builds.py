"""Builds of uploaded contexts, their log lines, and the cache lookup by context hash."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import Build, BuildLogLine
from cattery.store.types import utcnow


async def create_build(
    db: AsyncSession,
    organization_id: str,
    *,
    build_id: str,
    region: str,
    context_hash: str,
    dockerfile_path: str,
    context_size_bytes: int,
    status: str,
) -> Build:
    build = Build(
        id=build_id,
        organization_id=organization_id,
        region=region,
        context_hash=context_hash,
        dockerfile_path=dockerfile_path,
        context_size_bytes=context_size_bytes,
        status=status,
    )
    db.add(build)
    await db.flush()
    return build


async def get_build(db: AsyncSession, organization_id: str, build_id: str) -> Build | None:
    """The organization's build ``build_id``; another organization's is not found."""
    build = await db.get(Build, build_id)
    return build if build is not None and build.organization_id == organization_id else None


async def list_builds(
    db: AsyncSession,
    organization_id: str,
    *,
    context_hash: str | None = None,
    status: str | None = None,
    region: str | None = None,
    dockerfile_path: str | None = None,
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[Build], int]:
    """The matching builds, newest first, and how many match in all."""
    query = select(Build).where(Build.organization_id == organization_id)
    if context_hash is not None:
        query = query.where(Build.context_hash == context_hash)
    if status is not None:
        query = query.where(Build.status == status)
    if region is not None:
        query = query.where(Build.region == region)
    if dockerfile_path is not None:
        query = query.where(Build.dockerfile_path == dockerfile_path)
    total = await db.scalar(select(func.count()).select_from(query.subquery()))
    rows = await db.scalars(
        query.order_by(Build.created_at.desc(), Build.id).limit(limit).offset(offset)
    )
    return list(rows), int(total or 0)


async def list_unfinished_builds(db: AsyncSession, statuses: Iterable[str]) -> list[Build]:
    """Every organization's builds still in one of ``statuses``."""
    return list(await db.scalars(select(Build).where(Build.status.in_(list(statuses)))))


async def update_build(db: AsyncSession, build: Build, **fields: Any) -> None:
    """Set ``fields`` on the build (status, image, errorMessage, times, sizes)."""
    for name, value in fields.items():
        setattr(build, name, value)
    build.updated_at = utcnow()
    await db.flush()


async def append_build_log_lines(
    db: AsyncSession, build_id: str, lines: Iterable[tuple[datetime, str]]
) -> int:
    rows = [{"build_id": build_id, "ts": ts, "line": line} for ts, line in lines]
    if rows:
        await db.execute(insert(BuildLogLine), rows)
    return len(rows)


async def list_build_log_lines(db: AsyncSession, build_id: str, limit: int = 500) -> list[str]:
    """The build's last ``limit`` lines (where a failure shows), in order."""
    query = (
        select(BuildLogLine.line)
        .where(BuildLogLine.build_id == build_id)
        .order_by(BuildLogLine.id.desc())
        .limit(limit)
    )
    return list(await db.scalars(query))[::-1]
