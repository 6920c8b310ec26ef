"""The dispatcher's connections to instances, in this process: a connection opened while an
instance waits is the one its session's ``POST /bot`` uses; one the instance closed is
replaced; a request that may have reached the instance is never sent twice; the kept
connection closes with the instance; a request's head leaves at once and its body only once
the session is recorded (withdrawn when it could not be).

The instance is a stand-in on loopback speaking HTTP/1.1 (h11) in a thread of its own, so
that it can close a connection while the test's event loop has not yet looked at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import h11
import pytest

from cattery.backends.base import InstanceSpec
from cattery.contract import END_STATE_HEADER, SESSION_ID_HEADER
from cattery.control.dispatch import DispatchFailed, StreamDispatcher
from cattery.control.logrouter import LogRouter
from cattery.control.supervisor import SessionSupervisor
from cattery.pools import Pool, PoolOptions
from tests.support.fake_backend import FakeBackend, FakeHandle
from tests.support.waiting import until
from tests.unit.control.test_supervisor import new_session

SPEC = InstanceSpec(agent_key="org/agent", deployment_id="d1", image="/bots/agent")


@dataclass
class _Connection:
    sock: socket.socket
    requests: list[h11.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    #: the client closed its side
    ended: threading.Event = field(default_factory=threading.Event)


class StandInInstance:
    """Answers ``POST /bot`` with ``status`` (and an end state when it is 200); with
    ``hang_up``, reads the request and closes without answering (an instance that died)."""

    def __init__(self) -> None:
        self.status = 200
        self.hang_up = False
        #: while clear, a request is read but not answered (a session in progress)
        self.answering = threading.Event()
        self.answering.set()
        self.connections: list[_Connection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[h11.Request]:
        with self._lock:
            return [r for c in self.connections for r in c.requests]

    def close_connections(self) -> None:
        """Close every connection from this side (sends FIN before returning)."""
        with self._lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):  # closed already
                    conn.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        self.close_connections()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = _Connection(sock)
            with self._lock:
                self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: _Connection) -> None:
        http = h11.Connection(h11.SERVER)
        try:
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    data = conn.sock.recv(65536)
                    if not data:
                        conn.ended.set()
                        return
                    http.receive_data(data)
                elif isinstance(event, h11.Request):
                    with self._lock:
                        conn.requests.append(event)
                elif isinstance(event, h11.Data):
                    conn.bodies.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self._answer(conn, http)
                    return
        except OSError:
            conn.ended.set()

    def _answer(self, conn: _Connection, http: h11.Connection) -> None:
        while not self.answering.wait(0.05):
            if conn.sock.recv(1, socket.MSG_PEEK) == b"":  # the client left meanwhile
                conn.ended.set()
                return
        if self.hang_up:
            conn.sock.close()
            return
        body = b"{}" if self.status < 400 else b'{"code": "401", "error": "wrong token"}'
        headers = [("Content-Length", str(len(body)))]
        if self.status < 400:
            headers.append((END_STATE_HEADER, "completed"))
        out = http.send(h11.Response(status_code=self.status, headers=headers))
        out += http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())  # type: ignore[operator]
        conn.sock.sendall(out)  # type: ignore[arg-type]
        conn.sock.close()


class Instance(FakeHandle):
    """A fake backend's handle that lives at the stand-in's address."""

    def __init__(self, address: str) -> None:
        super().__init__(SPEC)
        self._address = address

    @property
    def address(self) -> str:
        return self._address


@pytest.fixture
def instance() -> Iterator[StandInInstance]:
    server = StandInInstance()
    yield server
    server.close()


HEADERS = {SESSION_ID_HEADER: "s1"}


@contextlib.asynccontextmanager
async def kept_connection(
    instance: StandInInstance,
) -> AsyncIterator[tuple[StreamDispatcher, Instance]]:
    """A dispatcher holding a connection to ``instance``, opened while it waited."""
    dispatcher = StreamDispatcher()
    handle = Instance(instance.address)
    try:
        dispatcher.instance_idle(handle)
        await until(lambda: dispatcher.kept(handle), "the connection opened ahead")
        yield dispatcher, handle
    finally:
        await dispatcher.aclose()


async def test_the_session_uses_the_connection_opened_while_idle(
    instance: StandInInstance,
) -> None:
    async with kept_connection(instance) as (dispatcher, handle):
        answer = await dispatcher.post_bot(handle, HEADERS, {"hello": "world"})
    assert (answer.status, answer.end_state) == (200, "completed")
    assert len(instance.connections) == 1
    [request] = instance.connections[0].requests
    assert (request.method, request.target) == (b"POST", b"/bot")
    assert (SESSION_ID_HEADER.lower().encode(), b"s1") in list(request.headers)
    assert b"".join(instance.connections[0].bodies) == b'{"hello": "world"}'
    assert not dispatcher.kept(handle)


async def test_a_connection_the_instance_closed_is_replaced(instance: StandInInstance) -> None:
    dispatcher = StreamDispatcher()
    handle = Instance(instance.address)
    try:
        dispatcher.instance_idle(handle)
        await until(lambda: len(instance.connections) == 1, "the connection opened ahead")
        await until(lambda: dispatcher.kept(handle), "kept")
        # closed while the loop does not look: the dispatcher must see it before writing
        instance.close_connections()
        answer = await dispatcher.post_bot(handle, HEADERS, {})
    finally:
        await dispatcher.aclose()
    assert answer.status == 200
    assert len(instance.connections) == 2
    assert [len(c.requests) for c in instance.connections] == [0, 1]


async def test_a_request_that_reached_the_instance_is_not_sent_again(
    instance: StandInInstance,
) -> None:
    instance.hang_up = True
    dispatcher = StreamDispatcher()
    handle = Instance(instance.address)
    try:
        dispatcher.instance_idle(handle)
        await until(lambda: len(instance.connections) == 1, "the connection opened ahead")
        with pytest.raises(DispatchFailed):
            await dispatcher.post_bot(handle, HEADERS, {})
    finally:
        await dispatcher.aclose()
    assert len(instance.requests()) == 1
    assert len(instance.connections) == 1


async def test_a_dispatch_cancelled_mid_session_closes_its_connection(
    instance: StandInInstance,
) -> None:
    """The control plane shutting down cancels the request: the instance sees it go."""
    instance.answering.clear()
    dispatcher = StreamDispatcher()
    handle = Instance(instance.address)
    try:
        dispatcher.instance_idle(handle)
        await until(lambda: dispatcher.kept(handle), "kept")
        posting = asyncio.create_task(dispatcher.post_bot(handle, HEADERS, {}))
        await until(lambda: len(instance.requests()) == 1, "the request reached the instance")
        posting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await posting
        await until(lambda: instance.connections[0].ended.is_set(), "the connection closed")
    finally:
        instance.answering.set()
        await dispatcher.aclose()
    assert len(instance.requests()) == 1


async def test_an_instance_that_cannot_be_reached_fails_the_dispatch() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    dispatcher = StreamDispatcher()
    handle = Instance(f"http://127.0.0.1:{port}")
    try:
        dispatcher.instance_idle(handle)  # its opening fails quietly: the dispatch finds out
        with pytest.raises(DispatchFailed):
            await dispatcher.post_bot(handle, HEADERS, {})
    finally:
        await dispatcher.aclose()


async def test_a_refusal_is_answered_with_its_text(instance: StandInInstance) -> None:
    instance.status = 401
    dispatcher = StreamDispatcher()
    try:
        answer = await dispatcher.post_bot(Instance(instance.address), HEADERS, {})
    finally:
        await dispatcher.aclose()
    assert (answer.status, answer.end_state) == (401, None)
    assert "wrong token" in answer.text


async def test_the_kept_connection_closes_with_the_instance(instance: StandInInstance) -> None:
    dispatcher = StreamDispatcher()
    handle = Instance(instance.address)
    try:
        dispatcher.instance_idle(handle)
        await until(lambda: len(instance.connections) == 1, "the connection opened ahead")
        await until(lambda: dispatcher.kept(handle), "kept")
        dispatcher.instance_gone(handle)
        await until(lambda: instance.connections[0].ended.is_set(), "the connection closed")
    finally:
        await dispatcher.aclose()
    assert instance.requests() == []


async def test_the_pool_tells_of_instances_waiting_and_gone(instance: StandInInstance) -> None:
    """The pool's own events drive the dispatcher: a warm instance gets its connection, and
    it is closed once the pool lets the instance go (here: a session that never used it)."""
    dispatcher = StreamDispatcher()
    backend = BackendAt(instance.address)
    pool = Pool("org/agent", SPEC, PoolOptions(min_agents=1, max_agents=1), backend, dispatcher)
    try:
        await pool.start()
        await until(lambda: pool.stats().idle == 1, "a warm instance")
        await until(lambda: len(instance.connections) == 1, "its connection opened ahead")
        lease = await pool.acquire()
        await until(lambda: dispatcher.kept(lease.handle), "its connection kept")
        await pool.release(lease.handle)
        assert not dispatcher.kept(lease.handle)
        await until(lambda: instance.connections[0].ended.is_set(), "the connection closed")
    finally:
        await pool.aclose()
        await dispatcher.aclose()
    assert instance.requests() == []


class BackendAt(FakeBackend):
    """The fake backend, its instances living at ``address``."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address

    async def spawn(self, spec: InstanceSpec) -> FakeHandle:
        handle = Instance(self.address)
        handle.gate.set()
        self.made.append(handle)
        return handle


async def test_a_kept_connections_head_leaves_at_once_and_its_body_once_sent_rest(
    instance: StandInInstance,
) -> None:
    """The instance reads the head while the session is recorded; the bot needs the body,
    which leaves only once the session is durable."""
    async with kept_connection(instance) as (dispatcher, handle):
        request = dispatcher.begin(handle, HEADERS, {"hello": "world"})
        await until(lambda: len(instance.requests()) == 1, "the head reached the instance")
        await asyncio.sleep(0.05)
        assert instance.connections[0].bodies == []
        request.send_rest()
        answer = await request.answer()
    assert (answer.status, answer.end_state) == (200, "completed")
    assert b"".join(instance.connections[0].bodies) == b'{"hello": "world"}'


async def test_an_aborted_request_leaves_the_instance_nothing_to_run(
    instance: StandInInstance,
) -> None:
    async with kept_connection(instance) as (dispatcher, handle):
        request = dispatcher.begin(handle, HEADERS, {"hello": "world"})
        request.abort()  # the session could not be recorded
        await until(lambda: instance.connections[0].ended.is_set(), "the connection closed")
        with pytest.raises(DispatchFailed):
            await request.answer()
    assert instance.connections[0].bodies == []


async def test_without_a_kept_connection_nothing_leaves_before_the_rest_may(
    instance: StandInInstance,
) -> None:
    dispatcher = StreamDispatcher()
    try:
        request = dispatcher.begin(Instance(instance.address), HEADERS, {})
        await asyncio.sleep(0.05)
        assert instance.connections == []
        request.send_rest()
        answer = await request.answer()
    finally:
        await dispatcher.aclose()
    assert answer.status == 200
    assert len(instance.requests()) == 1


class _Recorder:
    """The supervisor's recorder: notes what the instance had received at the record."""

    def __init__(self, instance: StandInInstance, *, fail: bool = False) -> None:
        self.instance = instance
        self.fail = fail
        self.bodies_at_record: list[bytes] | None = None

    def created(self, live: object) -> asyncio.Future[bool]:
        self.bodies_at_record = [b for c in self.instance.connections for b in c.bodies]
        if self.fail:
            raise OSError("the start journal took 0 of 200 bytes")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(True)
        return done

    async def bot_started(self, session_id: str, bot_start_seconds: float) -> None:
        pass

    async def ended(self, *args: object, **kwargs: object) -> None:
        pass


@pytest.mark.parametrize("recorded", [True, False])
async def test_no_body_reaches_the_instance_before_its_session_is_recorded(
    instance: StandInInstance, recorded: bool
) -> None:
    """The bot runs once the body is in: a session it runs for is always durable, and one
    that could not be recorded is withdrawn (its connection closed, no body sent)."""
    recorder = _Recorder(instance, fail=not recorded)
    router = LogRouter(writer=lambda lines, samples: asyncio.sleep(0))
    supervisor = SessionSupervisor(router, recorder)  # type: ignore[arg-type]
    handle = Instance(instance.address)
    try:
        supervisor.instance_events.instance_idle(handle)
        await until(lambda: supervisor.instance_events.kept(handle), "kept")  # type: ignore[attr-defined]
        if recorded:
            live = await supervisor.dispatch(new_session(handle), body={"a": 1})
            await until(lambda: instance.connections[0].bodies, "the body")
            assert live.task is not None
            await asyncio.wait_for(live.task, 10)
        else:
            with pytest.raises(OSError):
                await supervisor.dispatch(new_session(handle), body={"a": 1})
            await until(lambda: instance.connections[0].ended.is_set(), "the request withdrawn")
            assert instance.connections[0].bodies == []
    finally:
        await supervisor.aclose()
    assert recorder.bodies_at_record == []
