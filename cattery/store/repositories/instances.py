"""Live instances, remembered so a restarted control plane can reattach to them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.crypto import SecretBox
from cattery.store.models import TERMINAL_INSTANCE_STATUSES, Instance
from cattery.store.types import utcnow


class _Keep(Enum):
    KEEP = "keep"


#: "leave this column as it is" for ``update_instance`` (None is a value: no session)
KEEP = _Keep.KEEP


@dataclass(frozen=True)
class InstanceFacts:
    """Everything recorded about an instance; its token is given in clear and stored
    encrypted."""

    agent_id: str
    deployment_id: str
    backend: str
    address: str
    token: str
    status: str
    pid: int | None = None
    log_path: str | None = None
    log_offset: int = 0
    process_started_at: float | None = None
    session_id: str | None = None

    def stored(self, box: SecretBox, sealed: str | None = None) -> dict[str, Any]:
        """The record's columns as stored (the token encrypted, or ``sealed`` when that is
        its ciphertext already), plain JSON values: what the start journal keeps until the
        database has them."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "token"}
        values["token_encrypted"] = sealed if sealed is not None else box.encrypt(self.token)
        return values

    def columns(self, box: SecretBox) -> dict[str, Any]:
        return {**self.stored(box), "updated_at": utcnow()}


async def upsert_instance(
    db: AsyncSession, box: SecretBox, instance_id: str, facts: InstanceFacts
) -> Instance:
    """Write everything known about an instance (every column: what ``facts`` leaves out
    is cleared)."""
    instance = await db.get(Instance, instance_id)
    if instance is None:
        instance = Instance(id=instance_id)
        db.add(instance)
    for name, value in facts.columns(box).items():
        setattr(instance, name, value)
    await db.flush()
    return instance


def add_instance(
    db: AsyncSession, box: SecretBox, instance_id: str, facts: InstanceFacts
) -> Instance:
    """The record of an instance not recorded yet, written by the next flush or commit
    (no read first, unlike ``upsert_instance``)."""
    return add_instance_record(db, instance_id, facts.stored(box))


def add_instance_record(db: AsyncSession, instance_id: str, stored: dict[str, Any]) -> Instance:
    """``add_instance`` from columns ``InstanceFacts.stored`` made earlier (a journaled
    start's)."""
    instance = Instance(id=instance_id, **stored, updated_at=utcnow())
    db.add(instance)
    return instance


async def update_instance(
    db: AsyncSession,
    instance_id: str,
    *,
    status: str | _Keep = KEEP,
    log_offset: int | _Keep = KEEP,
    session_id: str | _Keep | None = KEEP,
) -> bool:
    """Change the fields that move while an instance lives, in one cheap UPDATE.

    False if the instance is not recorded.
    """
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("status", status),
            ("log_offset", log_offset),
            ("session_id", session_id),
        )
        if value is not KEEP
    }
    changes["updated_at"] = utcnow()
    updated = await db.scalars(
        update(Instance).where(Instance.id == instance_id).values(**changes).returning(Instance),
        execution_options={"populate_existing": True},  # refresh a loaded copy too
    )
    return updated.one_or_none() is not None


async def get_instance(db: AsyncSession, instance_id: str) -> Instance | None:
    return await db.get(Instance, instance_id)


def instance_token(box: SecretBox, instance: Instance) -> str:
    """The instance's token in clear, to talk to it again after a restart."""
    return box.decrypt(instance.token_encrypted)


async def list_live_instances(db: AsyncSession, backend: str | None = None) -> list[Instance]:
    """Instances not known to be stopped or failed, oldest first."""
    query = select(Instance).where(Instance.status.not_in(TERMINAL_INSTANCE_STATUSES))
    if backend is not None:
        query = query.where(Instance.backend == backend)
    return list(await db.scalars(query.order_by(Instance.created_at, Instance.id)))


async def delete_instance(db: AsyncSession, instance_id: str) -> bool:
    """Forget an instance once it is gone; False if it was not recorded."""
    result = await db.execute(delete(Instance).where(Instance.id == instance_id))
    return bool(result.rowcount)
