"""Live sessions: acquire an instance, dispatch ``POST /bot``, record how the session ends.

The supervisor owns one task per live session. Whatever happens to the request (the bot
returns, crashes, is stopped, outlives its budget, or the instance dies), the session gets
an end state and its instance is released to the pool to be discarded.

After a restart, sessions a killed control plane left running are ``reattach``-ed: no
request is in flight any more, so their task watches the instance exit and reads the end
state from the runtime's last line ("Session ended with end state X").
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
from loguru import logger

from cattery.backends.base import InstanceHandle, LogReading
from cattery.contract import (
    INSTANCE_TOKEN_HEADER,
    LOGGED_END_STATES,
    MAX_SESSION_HEADER,
    ROOM_TOKEN_HEADER,
    ROOM_URL_HEADER,
    SESSION_ID_HEADER,
    TRACEPARENT_HEADER,
    TRANSPORT_TYPE_HEADER,
    EndState,
)
from cattery.control.dispatch import (
    BotDispatcher,
    BotRequest,
    DispatchFailed,
    HttpxDispatcher,
    StreamDispatcher,
)
from cattery.control.logrouter import InstanceContext, LogRouter
from cattery.control.metrics import ControlMetrics
from cattery.control.session_webhooks import SessionWebhooks
from cattery.tasks import OwnedTasks

#: extra time past the session's own limit before the control plane kills the instance
BACKSTOP_GRACE_SECONDS = 30.0
KILL_GRACE_SECONDS = 2.0
OUTLIVED = "it outlived its max session duration"


class SessionRecorder(Protocol):
    def created(self, live: LiveSession) -> Awaitable[object]:
        """Make the session's start durable before returning; the awaitable is its commit
        to the database (every later write about the session waits for it)."""
        ...

    async def bot_started(self, session_id: str, bot_start_seconds: float) -> None: ...
    async def ended(
        self, session_id: str, end_state: str, when: datetime, reason: str | None = None
    ) -> None: ...


@dataclass(frozen=True)
class DailyRoom:
    room_url: str
    bot_token: str
    client_token: str


@dataclass
class LiveSession:
    id: str
    organization_id: str
    agent_id: str
    agent_key: str
    deployment_id: str
    handle: InstanceHandle
    cold_start: bool
    created_at: datetime
    transport: str | None = None
    started_monotonic: float = field(default_factory=time.monotonic)
    stop_requested: bool = False
    task: asyncio.Task[None] | None = None
    #: the end state the runtime logged as the session's last line, once seen
    logged_end_state: str | None = None
    #: taken over after a restart: its start was measured (or missed) by the previous owner
    reattached: bool = False
    #: why it ended, when not by its bot: recorded with the end state
    end_reason: str | None = None


Release = Callable[[InstanceHandle], Awaitable[None]]
#: joins a session's connection to its instance; returns an end state when the bot never
#: got it (or lost it), else None: the end state is the one the runtime logs
Connect = Callable[["LiveSession"], Awaitable[str | None]]


@dataclass(frozen=True)
class NewSession:
    """A session about to start: whose it is and the instance it got (dispatch and bridge)."""

    organization_id: str
    agent_id: str
    agent_key: str
    deployment_id: str
    handle: InstanceHandle
    cold_start: bool
    release: Release
    max_session_seconds: int
    transport: str | None = None
    session_id: str | None = None
    #: when the start was asked for (monotonic), so the bot's start time counts from there
    requested_at: float | None = None
    #: the W3C trace context the instance's spans continue (tracing on)
    traceparent: str | None = None


async def _already_connected(live: LiveSession) -> None:
    """A reattached session's connection was made by the control plane before: there is
    nothing left to join, only the instance to watch until it exits."""


def _backend_reason(handle: InstanceHandle) -> str | None:
    """What a backend knows of an instance's fate (a cluster node lost, or fenced while its
    instance ended the session by itself), through the optional ``lost_reason`` and
    ``fenced``; None when it knows of nothing wrong."""
    lost = getattr(handle, "lost_reason", None)
    if lost:
        return f"its instance was lost: {lost}"
    fenced = getattr(handle, "fenced", None)
    if fenced:
        return f"its instance's node was fenced: {fenced}"
    return None


def _death_reason(handle: InstanceHandle) -> str:
    """Why an instance is gone, in words for the session's record."""
    known = _backend_reason(handle)
    if known:
        return known
    if _out_of_memory(handle):
        return "its instance ran out of its memory limit"
    code = getattr(handle, "exit_code", None)
    if code is not None and code < 0:
        return f"its instance was killed by signal {-code}"
    if code is not None:
        return f"its instance exited with code {code}"
    return "its instance died"


def _out_of_memory(handle: InstanceHandle) -> bool:
    """Whether the kernel stopped the instance for its memory limit (where a backend can
    tell: the local backend's cgroups)."""
    return bool(getattr(handle, "out_of_memory", False))


class SessionSupervisor:
    def __init__(
        self,
        router: LogRouter,
        recorder: SessionRecorder,
        metrics: ControlMetrics | None = None,
        webhooks: SessionWebhooks | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """``http``: an httpx client to dispatch to instances with instead of connections
        of the supervisor's own (owned: closed by ``aclose``)."""
        self._router = router
        self._recorder = recorder
        self._metrics = metrics or ControlMetrics()
        self._webhooks = webhooks
        self._live: dict[str, LiveSession] = {}
        self._dispatcher: BotDispatcher = (
            StreamDispatcher() if http is None else HttpxDispatcher(http)
        )
        #: each live session's task, and the recordings of bots' starts
        self._tasks = OwnedTasks("sessions")
        router.on_session_event = self._on_session_event

    @property
    def instance_events(self) -> BotDispatcher:
        """What the pools tell of instances waiting and gone: the dispatcher keeps a
        connection to each warm one."""
        return self._dispatcher

    def get(self, session_id: str) -> LiveSession | None:
        return self._live.get(session_id)

    def live_sessions(self, agent_id: str) -> list[LiveSession]:
        return [live for live in self._live.values() if live.agent_id == agent_id]

    def active_count(self, agent_id: str) -> int:
        return sum(1 for live in self._live.values() if live.agent_id == agent_id)

    def _record_live(
        self, new: NewSession, session_id: str
    ) -> tuple[LiveSession, Awaitable[object]]:
        """Bind the instance's log lines to the session, record it (durable at once), and
        track it as live; with the database's commit of the record, still under way."""
        live = LiveSession(
            id=session_id,
            organization_id=new.organization_id,
            agent_id=new.agent_id,
            agent_key=new.agent_key,
            deployment_id=new.deployment_id,
            handle=new.handle,
            cold_start=new.cold_start,
            created_at=datetime.now(UTC),
            transport=new.transport,
        )
        if new.requested_at is not None:
            live.started_monotonic = new.requested_at
        self._router.bind(
            live.handle.id,
            InstanceContext(live.organization_id, live.agent_id, live.deployment_id, live.id),
        )
        recorded = self._recorder.created(live)
        self._live[live.id] = live
        self._metrics.session_started(live.agent_id, live.agent_key)
        return live, recorded

    async def _stored(self, live: LiveSession, recorded: Awaitable[object]) -> None:
        """Wait for the commit of the start's record, which ran beside the session's start:
        a caller answered reads the session back. One nobody waits for any more is stopped
        (its caller releases its instance)."""
        try:
            await asyncio.shield(asyncio.ensure_future(recorded))
        except asyncio.CancelledError:
            live.stop_requested = True
            raise
        except Exception as exc:
            logger.bind(session_id=live.id).opt(exception=exc).error(
                "Failed to store a session's start"
            )

    async def dispatch(
        self, new: NewSession, *, body: Any, daily: DailyRoom | None = None
    ) -> LiveSession:
        """Record the session and run ``POST /bot`` on the instance in an owned task; return
        once the record is committed (the request is on its way meanwhile).

        The request's head leaves before the record (the instance wakes and reads it while
        the session is journaled), its body after: the bot can't run before the session is
        durable."""
        session_id = new.session_id or str(uuid.uuid4())
        headers = {
            INSTANCE_TOKEN_HEADER: new.handle.token,
            SESSION_ID_HEADER: session_id,
            MAX_SESSION_HEADER: str(new.max_session_seconds),
        }
        if new.transport:
            headers[TRANSPORT_TYPE_HEADER] = new.transport
        if new.traceparent:
            headers[TRACEPARENT_HEADER] = new.traceparent
        if daily is not None:
            headers[ROOM_URL_HEADER] = daily.room_url
            headers[ROOM_TOKEN_HEADER] = daily.bot_token
        request = self._dispatcher.begin(new.handle, headers, body)
        try:
            live, recorded = self._record_live(new, session_id)
            live.task = self._tasks.spawn(
                self._run(live, request, new.max_session_seconds, new.release), "dispatch_task"
            )
        except BaseException:
            request.abort()
            raise
        request.send_rest()
        # The instance just woken often waits for a core behind this process, which has the
        # record's commit to run next: let it go first (its bot is what the caller awaits).
        os.sched_yield()
        await self._stored(live, recorded)
        return live

    async def _run(
        self,
        live: LiveSession,
        request: BotRequest,
        max_session_seconds: int,
        release: Release,
    ) -> None:
        end_state = EndState.AGENT_ERROR.value
        with logger.contextualize(session_id=live.id):
            try:
                async with asyncio.timeout(max_session_seconds + BACKSTOP_GRACE_SECONDS):
                    answer = await request.answer()
                if answer.status >= 400:
                    logger.error(f"Instance refused the session: {answer.status} {answer.text}")
                    end_state = EndState.ENDED_BEFORE_AGENT_START.value
                else:
                    end_state = answer.end_state or EndState.COMPLETED.value
            except TimeoutError:
                logger.error("Session outlived its max duration; killing its instance")
                live.handle.kill()
                live.end_reason = OUTLIVED
                end_state = EndState.TERMINATED.value
            except DispatchFailed as exc:
                end_state = (
                    EndState.TERMINATED.value if live.stop_requested else EndState.AGENT_ERROR.value
                )
                if _out_of_memory(live.handle):
                    end_state = EndState.OUT_OF_MEMORY.value
                    logger.error("Instance of the session ran out of memory")
                elif not live.stop_requested:
                    logger.error(f"Instance of the session died: {exc}")
                    self._metrics.session_instance_died(live.agent_key)
                # its last lines (a traceback) are read before the end is recorded
                await live.handle.aclose(grace=KILL_GRACE_SECONDS)
                if not live.stop_requested:
                    live.end_reason = _death_reason(live.handle)
            except asyncio.CancelledError:
                end_state = EndState.TERMINATED.value
                raise
            finally:
                if live.stop_requested:
                    end_state = EndState.TERMINATED.value
                await self._finish(live, end_state, release)

    async def bridge(self, new: NewSession, *, connect: Connect) -> LiveSession:
        """Record a session whose lifetime is a WebSocket joined to the instance's ``/ws``
        (a carrier's media stream, a generic client), and run ``connect(live)`` in its task.

        The session ends once the connection has closed and the bot has returned (the
        one-session instance exits), with the end state the runtime logged; or with the one
        ``connect`` returns when the bot never got the connection or lost it.
        """
        live, recorded = self._record_live(new, new.session_id or str(uuid.uuid4()))
        budget = new.max_session_seconds + BACKSTOP_GRACE_SECONDS
        live.task = self._tasks.spawn(
            self._bridged(live, connect, budget, new.release), "bridge_task"
        )
        await self._stored(live, recorded)
        return live

    async def _bridged(
        self, live: LiveSession, connect: Connect, budget: float, release: Release
    ) -> None:
        end_state: str | None = None
        with logger.contextualize(session_id=live.id):
            try:
                try:
                    async with asyncio.timeout(budget):
                        end_state = await connect(live)
                        if end_state is None:  # the bot may still be at work after a hang-up
                            await live.handle.wait()
                except TimeoutError:
                    logger.error("Session outlived its max duration; killing its instance")
                    live.handle.kill()
                    live.stop_requested = True
                    live.end_reason = OUTLIVED
                # Closing reads the instance's log to the end, last line included.
                await live.handle.aclose(grace=KILL_GRACE_SECONDS)
                if live.logged_end_state is not None:
                    end_state = live.logged_end_state
                elif _out_of_memory(live.handle):
                    end_state = EndState.OUT_OF_MEMORY.value
                    live.end_reason = _death_reason(live.handle)
                elif end_state is None:
                    end_state = EndState.AGENT_ERROR.value
                    if not live.stop_requested:
                        live.end_reason = _death_reason(live.handle)
                        logger.error("Instance of the session exited without an end state")
                        self._metrics.session_instance_died(live.agent_key)
            except asyncio.CancelledError:
                end_state = EndState.TERMINATED.value
                raise
            finally:
                if live.stop_requested:
                    end_state = EndState.TERMINATED.value
                await self._finish(live, end_state or EndState.AGENT_ERROR.value, release)

    def reattach(
        self,
        *,
        session_id: str,
        organization_id: str,
        agent_id: str,
        agent_key: str,
        deployment_id: str,
        handle: InstanceHandle,
        cold_start: bool,
        created_at: datetime,
        release: Release,
        max_session_seconds: int,
        transport: str | None = None,
    ) -> LiveSession:
        """Take over a session an earlier control plane dispatched to ``handle`` (adopted).

        The session is live again (the Session API reaches it, ``stop`` ends it); when the
        instance exits, its end state is the one the runtime logged, or ``agent_error``.
        """
        live = LiveSession(
            id=session_id,
            organization_id=organization_id,
            agent_id=agent_id,
            agent_key=agent_key,
            deployment_id=deployment_id,
            handle=handle,
            cold_start=cold_start,
            created_at=created_at,
            transport=transport,
            reattached=True,
        )
        self._router.bind(
            handle.id, InstanceContext(organization_id, agent_id, deployment_id, live.id)
        )
        elapsed = (datetime.now(UTC) - created_at).total_seconds()
        budget = max(0.0, max_session_seconds + BACKSTOP_GRACE_SECONDS - elapsed)
        self._live[live.id] = live
        live.task = self._tasks.spawn(
            self._bridged(live, _already_connected, budget, release), "reattached_task"
        )
        return live

    async def _finish(self, live: LiveSession, end_state: str, release: Release) -> None:
        """Record the end, after the lines the session printed so far: a reader who sees
        the end state sees the output (a crash's traceback) that led to it."""
        self._live.pop(live.id, None)
        if live.end_reason is None and not live.stop_requested:
            live.end_reason = _backend_reason(live.handle)
        self._metrics.session_ended(live.agent_key, end_state)
        try:
            if isinstance(live.handle, LogReading):
                await live.handle.read_log()
            await self._router.flush()
        except Exception as exc:
            logger.opt(exception=exc).error("Failed to store a session's last log lines")
        try:
            await self._recorder.ended(
                live.id, end_state, datetime.now(UTC), reason=live.end_reason
            )
        except Exception as exc:
            logger.opt(exception=exc).error("Failed to record the end of a session")
        if self._webhooks is not None:
            self._webhooks.session_ended(live.id)
        try:
            await release(live.handle)
        except Exception as exc:
            logger.opt(exception=exc).error("Failed to release an instance")
        # The binding stays: the instance's last lines are still being read from its log.

    async def stop(self, session_id: str) -> bool:
        """Terminate a live session's instance; False when the session is not live here."""
        live = self._live.get(session_id)
        if live is None:
            return False
        live.stop_requested = True
        await live.handle.aclose(grace=KILL_GRACE_SECONDS)
        if live.task is not None:
            await asyncio.gather(live.task, return_exceptions=True)
        return True

    def _on_session_event(self, session_id: str, event: str, when: datetime) -> None:
        live = self._live.get(session_id)
        if live is None:
            return
        kind, _, value = event.partition(":")
        if kind == "ended" and value in LOGGED_END_STATES:
            live.logged_end_state = value
            return
        if kind != "bot_started" or live.reattached:
            return
        seconds = max(0.0, time.monotonic() - live.started_monotonic)
        self._metrics.bot_started(live.agent_key, _start_kind(live), seconds)
        self._tasks.spawn(self._bot_started(session_id, seconds), "bot_started_task")

    async def _bot_started(self, session_id: str, seconds: float) -> None:
        await self._recorder.bot_started(session_id, seconds)
        if self._webhooks is not None:
            self._webhooks.session_started(session_id)

    def active_agent_keys(self) -> list[str]:
        """One agent key per live session (the metrics' active sessions)."""
        return [live.agent_key for live in self._live.values()]

    async def aclose(self) -> None:
        """Live sessions end as terminated; every task is cancelled and awaited."""
        await self._tasks.aclose()
        await self._dispatcher.aclose()


def _start_kind(live: LiveSession) -> str:
    """How the session's instance came to be: warm, forked on demand, or started cold."""
    if not live.cold_start:
        return "warm"
    return "forked" if getattr(live.handle, "forked", False) else "cold"
