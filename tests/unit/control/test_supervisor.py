"""The session supervisor in this process: instances from the fake backend, their runtime's
``POST /bot`` answered by httpx's mock transport, the store replaced by an event list.

What matters: every session gets an end state, its instance is released, a failure while
recording does not lose the release, and the session's lines are stored before its end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest
from loguru import logger

from cattery.backends.base import InstanceHandle, InstanceSpec
from cattery.contract import END_STATE_HEADER, SESSION_ID_HEADER, EndState
from cattery.control.logrouter import LogRecord, LogRouter, Sample
from cattery.control.supervisor import LiveSession, NewSession, SessionSupervisor
from tests.support.fake_backend import FakeBackend, FakeHandle
from tests.support.waiting import async_wait_for

SPEC = InstanceSpec(agent_key="org/agent", deployment_id="dep1", image="/bots/agent")


@dataclass
class Events:
    """What reached the store, in order: ``("lines", [text...])`` and ``("ended", state)``."""

    items: list[tuple[str, object]] = field(default_factory=list)
    #: set to hold log writes until a test opens it
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    writing: asyncio.Event = field(default_factory=asyncio.Event)
    fail_ended: bool = False
    reasons: list[str | None] = field(default_factory=list)

    async def write_logs(self, lines: list[LogRecord], samples: list[Sample]) -> None:
        self.writing.set()
        await self.gate.wait()
        self.items.append(("lines", [r.line for r in lines]))

    # the supervisor's SessionRecorder
    async def created(self, live: LiveSession) -> None:
        self.items.append(("created", live.id))

    async def bot_started(self, session_id: str, bot_start_seconds: float) -> None:
        self.items.append(("bot_started", session_id))

    async def ended(
        self, session_id: str, end_state: str, when: datetime, reason: str | None = None
    ) -> None:
        if self.fail_ended:
            raise RuntimeError("the store is down")
        self.items.append(("ended", end_state))
        self.reasons.append(reason)

    def ended_states(self) -> list[object]:
        return [value for kind, value in self.items if kind == "ended"]

    def stored_lines(self) -> list[str]:
        return [line for kind, value in self.items if kind == "lines" for line in value]  # type: ignore[union-attr]


Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@dataclass
class Harness:
    events: Events
    router: LogRouter
    backend: FakeBackend
    released: list[str]
    handler: list[Handler]

    def supervisor(self) -> SessionSupervisor:
        def answer(request: httpx.Request) -> httpx.Response | Awaitable[httpx.Response]:
            return self.handler[0](request)

        client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
        return SessionSupervisor(self.router, self.events, http=client)

    async def new_session(self) -> NewSession:
        handle = await self.backend.spawn(SPEC)
        await handle.ready(1)

        async def release(released: object) -> None:
            assert isinstance(released, FakeHandle)
            self.released.append(released.id)
            await released.aclose()

        return new_session(handle, release)


async def _nothing(_: object) -> None:
    pass


def new_session(
    handle: InstanceHandle, release: Callable[[object], Awaitable[None]] = _nothing
) -> NewSession:
    """A warm session of the test agent on ``handle``."""
    return NewSession(
        organization_id="org1",
        agent_id="agent1",
        agent_key=SPEC.agent_key,
        deployment_id=SPEC.deployment_id,
        handle=handle,
        cold_start=False,
        release=release,
        max_session_seconds=60,
    )


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    events = Events()
    events.gate.set()
    router = LogRouter(writer=events.write_logs)
    router.start()
    yield Harness(events, router, FakeBackend(), [], [lambda r: httpx.Response(200)])
    events.gate.set()
    await router.aclose()


async def ended(live: LiveSession) -> None:
    assert live.task is not None
    await asyncio.wait_for(asyncio.shield(live.task), timeout=10)


async def test_a_completed_session_records_the_end_state_the_runtime_answers(harness) -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={END_STATE_HEADER: EndState.COMPLETED.value})

    harness.handler[0] = answer
    supervisor = harness.supervisor()
    new = await harness.new_session()
    live = await supervisor.dispatch(new, body={"hello": 1})
    await ended(live)

    assert harness.events.ended_states() == ["completed"]
    assert harness.released == [new.handle.id]
    assert seen[0].headers[SESSION_ID_HEADER] == live.id
    assert supervisor.get(live.id) is None
    await supervisor.aclose()


async def test_a_crash_s_lines_are_stored_before_its_end_state(harness) -> None:
    """The instance prints its traceback and dies while an earlier batch of lines is still
    on its way to the store: the end state is written after both."""
    new = await harness.new_session()
    crashed, printed = asyncio.Event(), asyncio.Event()

    async def answer(request: httpx.Request) -> httpx.Response:
        await printed.wait()  # it dies once it printed its traceback
        crashed.set()
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    harness.handler[0] = answer
    supervisor = harness.supervisor()
    harness.events.gate.clear()  # the store is slow: the flush task's batch waits
    live = await supervisor.dispatch(new, body={})
    harness.router.line(new.handle.id, "first line, already on its way")
    await asyncio.wait_for(harness.events.writing.wait(), timeout=10)
    harness.router.line(new.handle.id, "Traceback (most recent call last):")
    harness.router.line(new.handle.id, "RuntimeError: the bot broke")
    printed.set()
    await asyncio.wait_for(crashed.wait(), timeout=10)
    await async_wait_for(  # the session's task reaches its end; nothing is written yet
        lambda: _async(supervisor.get(live.id) is None), timeout=10, what="the session's end"
    )
    assert harness.events.ended_states() == []
    harness.events.gate.set()
    await ended(live)

    kinds = [kind for kind, _ in harness.events.items]
    assert kinds[-1] == "ended", kinds
    assert harness.events.ended_states() == [EndState.AGENT_ERROR.value]
    assert "RuntimeError: the bot broke" in harness.events.stored_lines()
    assert new.handle.closed  # read to its end, then released
    await supervisor.aclose()


async def test_a_session_whose_instance_is_lost_records_why(harness) -> None:
    """A backend that lost an instance (a cluster node gone) says why; the session's record
    carries it beside ``agent_error``, so ``agent sessions`` tells a lost node from a crash."""
    new = await harness.new_session()
    new.handle.lost_reason = "its node is gone (raylet died)"  # type: ignore[attr-defined]

    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    harness.handler[0] = answer
    supervisor = harness.supervisor()
    live = await supervisor.dispatch(new, body={})
    await ended(live)

    assert harness.events.ended_states() == [EndState.AGENT_ERROR.value]
    assert harness.events.reasons == ["its instance was lost: its node is gone (raylet died)"]
    await supervisor.aclose()


async def test_a_session_ended_while_its_node_is_fenced_records_why(harness) -> None:
    """A hung node's instance ends its session itself once its lease runs out; the answer
    looks normal, but the record says the node was fenced."""
    new = await harness.new_session()
    new.handle.fenced = "its node stopped answering"  # type: ignore[attr-defined]
    supervisor = harness.supervisor()
    live = await supervisor.dispatch(new, body={})
    await ended(live)
    assert harness.events.reasons == ["its instance's node was fenced: its node stopped answering"]
    await supervisor.aclose()


async def test_a_session_its_bot_completes_has_no_end_reason(harness) -> None:
    supervisor = harness.supervisor()
    live = await supervisor.dispatch(await harness.new_session(), body={})
    await ended(live)
    assert harness.events.reasons == [None]
    await supervisor.aclose()


async def test_lines_written_before_the_answer_are_read_before_the_end_is_recorded(
    harness,
) -> None:
    """A runtime logs a crash's traceback, then answers ``POST /bot`` with ``agent_error``:
    a handle whose log is read later (``LogReading``) is read to now before the end."""
    new = await harness.new_session()
    unread = ["Traceback (most recent call last):", "RuntimeError: the bot broke"]

    async def read_log() -> None:
        while unread:
            harness.router.line(new.handle.id, unread.pop(0))

    new.handle.read_log = read_log  # type: ignore[attr-defined]
    harness.handler[0] = lambda r: httpx.Response(
        200, headers={END_STATE_HEADER: EndState.AGENT_ERROR.value}
    )
    supervisor = harness.supervisor()
    live = await supervisor.dispatch(new, body={})
    await ended(live)

    assert harness.events.ended_states() == [EndState.AGENT_ERROR.value]
    assert "RuntimeError: the bot broke" in harness.events.stored_lines()
    assert [kind for kind, _ in harness.events.items][-1] == "ended"
    await supervisor.aclose()


async def test_a_failure_to_record_the_end_still_releases_the_instance(harness) -> None:
    harness.events.fail_ended = True
    supervisor = harness.supervisor()
    errors: list[str] = []
    sink = logger.add(lambda m: errors.append(m.record["message"]), level="ERROR")
    try:
        new = await harness.new_session()
        live = await supervisor.dispatch(new, body={})
        await ended(live)
    finally:
        logger.remove(sink)
    assert harness.released == [new.handle.id]
    assert any("Failed to record the end of a session" in e for e in errors), errors
    await supervisor.aclose()


async def test_a_stopped_session_ends_terminated(harness) -> None:
    started = asyncio.Event()
    new = await harness.new_session()

    async def slow(request: httpx.Request) -> httpx.Response:
        started.set()
        await new.handle.wait()  # the bot runs until its instance is stopped
        raise httpx.ReadError("the instance closed the connection")

    client = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    supervisor = SessionSupervisor(harness.router, harness.events, http=client)
    live = await supervisor.dispatch(new, body={})
    await asyncio.wait_for(started.wait(), timeout=10)

    assert await supervisor.stop(live.id)
    assert harness.events.ended_states() == [EndState.TERMINATED.value]
    assert not await supervisor.stop(live.id)  # no longer live
    await supervisor.aclose()


async def test_closing_the_supervisor_ends_live_sessions_as_terminated(harness) -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await never.wait()
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(hang))
    supervisor = SessionSupervisor(harness.router, harness.events, http=client)
    new = await harness.new_session()
    await supervisor.dispatch(new, body={})
    await asyncio.wait_for(started.wait(), timeout=10)

    await supervisor.aclose()

    assert harness.events.ended_states() == [EndState.TERMINATED.value]
    assert harness.released == [new.handle.id]


async def test_a_bridged_session_takes_the_end_state_its_runtime_logged(harness) -> None:
    supervisor = harness.supervisor()
    new = await harness.new_session()

    async def connect(live: LiveSession) -> str | None:
        harness.router.line(
            new.handle.id,
            f"2026-01-01 00:00:00.000 | INFO     | runtime | {live.id} - "
            "Session ended with end state completed",
        )
        await async_wait_for(
            lambda: _async(live.logged_end_state == "completed"),
            timeout=10,
            what="the logged end state",
        )
        new.handle.die()  # the one-session instance exits after its bot
        return None

    live = await supervisor.bridge(new, connect=connect)
    await ended(live)

    assert harness.events.ended_states() == ["completed"]
    assert any("end state completed" in line for line in harness.events.stored_lines())
    await supervisor.aclose()


async def _async(value: bool) -> bool:
    return value
