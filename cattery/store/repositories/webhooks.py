"""Session webhook deliveries: queued when a session starts or ends, tried until they land."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cattery.store.models import WebhookDelivery
from cattery.store.types import utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


async def enqueue_delivery(
    db: AsyncSession, *, session_id: str, event: str, url: str, body: str
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        session_id=session_id,
        event=event,
        url=url,
        body=body,
        status=PENDING,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    db.add(delivery)
    await db.flush()
    return delivery


async def due_deliveries(
    db: AsyncSession, now: datetime, *, exclude: set[str], limit: int
) -> list[WebhookDelivery]:
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit + len(exclude))
    )
    rows = (await db.execute(query)).scalars().all()
    return [row for row in rows if row.id not in exclude][:limit]


async def next_due_at(db: AsyncSession) -> datetime | None:
    query = (
        select(WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.status == PENDING)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
    )
    return (await db.execute(query)).scalar_one_or_none()


async def record_attempt(
    db: AsyncSession,
    delivery_id: str,
    *,
    status: str,
    status_code: int | None,
    error: str | None,
    next_attempt_at: datetime | None,
) -> None:
    delivery = await db.get(WebhookDelivery, delivery_id)
    if delivery is None:
        return
    delivery.attempts += 1
    delivery.status = status
    delivery.last_status_code = status_code
    delivery.last_error = error[:1024] if error else None
    if next_attempt_at is not None:
        delivery.next_attempt_at = next_attempt_at
    if status == DELIVERED:
        delivery.delivered_at = utcnow()
    await db.flush()


async def list_deliveries(db: AsyncSession, session_id: str) -> list[WebhookDelivery]:
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.session_id == session_id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    )
    return list((await db.execute(query)).scalars().all())
