"""Session webhooks: ``session.started`` and ``session.ended`` posted to the agent's URL.

An event is written to the store as a delivery when it happens, off the start path (a
task of its own), and a sender loop tries every due delivery: a 2xx answer delivers it;
anything else (an error status, no answer within the timeout) schedules the next try
from ``retry_schedule`` (its last step repeats) until the delivery is ``max_age_hours``
old, then it fails. A restart resumes what is pending.

Each try is signed: ``X-Cattery-Signature: v1=HEX``, the HMAC-SHA256 of
``"{timestamp}.{body}"`` under the agent's secret ``SESSION_WEBHOOK_SECRET``, with the
Unix time in ``X-Cattery-Timestamp`` (a receiver refuses old timestamps: no replays).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cattery.control.latency import latency_metrics
from cattery.settings import WebhookSettings
from cattery.store import repositories as repo
from cattery.store.crypto import SecretBox
from cattery.store.models import WebhookDelivery
from cattery.store.repositories.webhooks import DELIVERED, FAILED, PENDING

SECRET_KEY = "SESSION_WEBHOOK_SECRET"
EVENT_HEADER = "X-Cattery-Event"
DELIVERY_HEADER = "X-Cattery-Delivery"
TIMESTAMP_HEADER = "X-Cattery-Timestamp"
SIGNATURE_HEADER = "X-Cattery-Signature"
STARTED, ENDED = "session.started", "session.ended"
BATCH = 20


def signature(secret: str, timestamp: str, body: str) -> str:
    """``v1=`` and the hex HMAC-SHA256 of ``"{timestamp}.{body}"``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return f"v1={mac.hexdigest()}"


class SessionWebhooks:
    """Owned by the control plane's state; owns its sender loop, its tasks and its client."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        box: SecretBox,
        settings: WebhookSettings,
        flush_logs: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._box = box
        self._settings = settings
        self._flush_logs = flush_logs
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_seconds), follow_redirects=False
        )
        self._wake = asyncio.Event()
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._sender_task(), name="webhook_sender_task")

    def session_started(self, session_id: str) -> None:
        """Queue ``session.started`` (the bot was called); returns at once."""
        self._spawn(self._enqueue(session_id, STARTED), f"webhook-started-{session_id}")

    def session_ended(self, session_id: str) -> None:
        """Queue ``session.ended``, once the session's last log lines are stored."""
        self._spawn(self._enqueue(session_id, ENDED), f"webhook-ended-{session_id}")

    async def aclose(self) -> None:
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop_task = None
        await self._http.aclose()

    # -- queueing ----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("Session webhook task failed")

    async def _enqueue(self, session_id: str, event: str) -> None:
        if event == ENDED and self._flush_logs is not None:
            await self._flush_logs()  # the latency lines the instance logged last
        async with self._sessionmaker.begin() as db:
            session = await repo.get_session_by_id(db, session_id)
            if session is None:
                return
            dep = await repo.get_deployment(db, session.deployment_id)
            url = dep.session_webhook_url if dep is not None else None
            if not url:
                return
            agent = await repo.get_agent_by_id(db, session.agent_id)
            body = _event_body(event, session, agent, await repo.get_latency(db, session.id))
            await repo.enqueue_delivery(db, session_id=session.id, event=event, url=url, body=body)
        self._wake.set()

    # -- sending -----------------------------------------------------------------------

    async def _sender_task(self) -> None:
        while True:
            try:
                await self._send_due()
                wait = await self._until_next_due()
            except Exception as exc:
                logger.opt(exception=exc).error("Session webhook sender failed; retrying")
                wait = self._settings.poll_seconds
            self._wake.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _until_next_due(self) -> float:
        async with self._sessionmaker() as db:
            due = await repo.next_due_at(db)
        if due is None:
            return self._settings.poll_seconds
        seconds = (due - datetime.now(UTC)).total_seconds()
        return min(self._settings.poll_seconds, max(0.01, seconds))

    async def _send_due(self) -> None:
        # What is in flight as the read begins: a try that ends during the read leaves the
        # set, and the read may still show its delivery as it was (pending and due).
        in_flight = set(self._in_flight)
        async with self._sessionmaker() as db:
            due = await repo.due_deliveries(db, datetime.now(UTC), exclude=in_flight, limit=BATCH)
            jobs = [(d.id, d.url, d.body, d.event, d.created_at, d.attempts) for d in due]
            secrets = {d.id: await self._secret(db, d) for d in due}
        for job in jobs:
            self._in_flight.add(job[0])
            self._spawn(self._attempt(*job, secrets[job[0]]), f"webhook-try-{job[0]}")

    async def _secret(self, db: AsyncSession, delivery: WebhookDelivery) -> str | None:
        session = await repo.get_session_by_id(db, delivery.session_id)
        dep = await repo.get_deployment(db, session.deployment_id) if session else None
        if dep is None or not dep.secret_set:
            return None
        found = await repo.get_secret_set(db, session.organization_id, dep.secret_set)  # type: ignore[union-attr]
        if found is None:
            return None
        return (await repo.get_secret_values(db, self._box, found)).get(SECRET_KEY)

    async def _attempt(
        self,
        delivery_id: str,
        url: str,
        body: str,
        event: str,
        created_at: datetime,
        attempts: int,
        secret: str | None,
    ) -> None:
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: event,
            DELIVERY_HEADER: delivery_id,
            TIMESTAMP_HEADER: timestamp,
        }
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
        code: int | None = None
        error: str | None = None
        try:
            resp = await self._http.post(url, content=body.encode(), headers=headers)
            code = resp.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:1024] or type(exc).__name__
        try:
            await self._record(delivery_id, created_at, attempts, code, error)
        finally:
            self._in_flight.discard(delivery_id)
            self._wake.set()

    async def _record(
        self,
        delivery_id: str,
        created_at: datetime,
        attempts: int,
        code: int | None,
        error: str | None,
    ) -> None:
        next_at: datetime | None = None
        if error is None:
            status = DELIVERED
        else:
            delay = self._settings.delay(attempts)
            next_at = datetime.now(UTC) + timedelta(seconds=delay)
            age = next_at - _aware(created_at)
            gave_up = age > timedelta(hours=self._settings.max_age_hours)
            status = FAILED if gave_up else PENDING
            logger.bind(delivery=delivery_id).warning(
                f"Session webhook try {attempts + 1} failed ({error}); "
                + ("giving up" if gave_up else f"next in {delay:g} s")
            )
        async with self._sessionmaker.begin() as db:
            await repo.record_attempt(
                db,
                delivery_id,
                status=status,
                status_code=code,
                error=error,
                next_attempt_at=next_at,
            )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return _aware(value).isoformat() if value is not None else None


def _event_body(event: str, session: Any, agent: Any, latency_row: Any) -> str:
    data: dict[str, Any] = {
        "event": event,
        "sessionId": session.id,
        "serviceId": session.agent_id,
        "agentName": agent.name if agent is not None else None,
        "organizationId": session.organization_id,
        "deploymentId": session.deployment_id,
        "transport": session.transport,
        "createdAt": _iso(session.created_at),
        "coldStart": session.cold_start,
        "botStartSeconds": session.bot_start_seconds,
    }
    if event == ENDED:
        ended = session.ended_at
        duration = None
        if ended is not None:
            duration = (_aware(ended) - _aware(session.created_at)).total_seconds()
        metrics = latency_metrics(latency_row)
        metrics.pop("userBotLatencies")
        data |= {
            "endState": session.end_state,
            "endedAt": _iso(ended),
            "durationSeconds": duration,
            "latencyMetrics": metrics,
        }
    return json.dumps(data, separators=(",", ":"))
