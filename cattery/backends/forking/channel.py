"""The backend's end of one parent's control socket (a shared parent's or an agent's).

Requests are answered by a pid (``{"id": N, "pid": P, ...}``) or an error; the parent also says
once that it is ready (or why it refuses to serve) and reports each child it reaps. The
channel is gone once the socket reads end of file: the parent exited (or closed it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

from cattery.backends.forking import wire
from cattery.tasks import OwnedTasks


class ForkFailed(Exception):
    """The parent could not fork this request (it died, or ``fork`` failed)."""


class Channel:
    """Owns the backend's end of the socket and the task reading it; not the process."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        sock.setblocking(False)
        self._ready: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._pending: dict[int, asyncio.Future[dict]] = {}
        self._next_id = 0
        self._exits: dict[int, int] = {}
        self._forked: set[int] = set()
        self._exit_seen = asyncio.Event()  # replaced by a fresh one at each exit report
        #: why the parent refused to serve, when it said so before exiting
        self.refusal: str | None = None
        #: when a request was last answered or a child last exited (``time.monotonic``)
        self.last_activity = time.monotonic()
        self.gone = asyncio.Event()
        self._tasks = OwnedTasks(name)
        self._tasks.spawn(self._read_task(), "read_task")

    @property
    def alive(self) -> bool:
        return not self.gone.is_set()

    @property
    def live_children(self) -> int:
        """Children it forked that it has not reported as exited."""
        return len(self._forked - self._exits.keys())

    def exit_code(self, pid: int) -> int | None:
        return self._exits.get(pid)

    async def wait_exit_code(self, pid: int, timeout: float) -> int | None:
        """``pid``'s exit code once reported, or None after ``timeout``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while pid not in self._exits and self.alive:
            seen = self._exit_seen
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(seen.wait(), max(0.0, left))
            except TimeoutError:
                break
        return self._exits.get(pid)

    async def ready(self, timeout: float) -> dict:
        """The parent's ready message; ``TimeoutError``, or ``ForkFailed`` if it exits."""
        return await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    async def send(self, message: dict) -> None:
        await _send_fds(self._sock, wire.encode(message), [])

    async def request(self, message: dict, fds: list[int], *, counted: bool = True) -> dict:
        """Send ``message`` (given an id) with ``fds``; the answer, with its ``pid``.
        ``counted``: the child is a live one from now on (a spare is, once handed out)."""
        if not self.alive:
            raise ForkFailed("the parent is gone")
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[dict] = loop.create_future()
        self._pending[request_id] = future
        try:
            await _send_fds(self._sock, wire.encode({**message, "id": request_id}), fds)
        except OSError as exc:
            self._pending.pop(request_id, None)
            raise ForkFailed(f"could not reach the parent: {exc}") from exc
        try:
            reply = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_kill_orphan)  # nobody will own that child
            raise
        pid = reply["pid"]
        self._exits.pop(pid, None)  # a reused pid: an older child's code is not this one's
        if counted:
            self._forked.add(pid)
        return reply

    async def aclose(self) -> None:
        """Close the socket (the parent exits on end of file) and stop reading. Idempotent."""
        self._sock.close()
        await self._tasks.aclose()
        self._fail_pending(ForkFailed("the parent was closed"))
        self.gone.set()

    async def _read_task(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    packet = await loop.sock_recv(self._sock, wire.MAX_PACKET)
                except OSError:
                    packet = b""
                if not packet:
                    break
                self._dispatch(wire.decode(packet))
        finally:
            self.gone.set()
            self._fail_pending(ForkFailed("the parent exited"))

    def _dispatch(self, message: dict) -> None:
        event = message.get("event")
        if event == "exit":
            self._exits[int(message["pid"])] = int(message["code"])
            self.last_activity = time.monotonic()
            seen, self._exit_seen = self._exit_seen, asyncio.Event()
            seen.set()
        elif event == "refused":
            self.refusal = str(message.get("reason") or "refused to serve")
        elif event == "ready":
            if not self._ready.done():
                self._ready.set_result(message)
        else:
            self.last_activity = time.monotonic()
            future = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if future is None or future.done():
                if "pid" in message:  # an answer nobody awaits any more
                    kill_pid(int(message["pid"]))
                return
            if "pid" in message:
                future.set_result({**message, "pid": int(message["pid"])})
            else:
                future.set_exception(ForkFailed(str(message.get("error", "no pid"))))

    def _fail_pending(self, exc: ForkFailed) -> None:
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: nobody may be waiting any more
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()


def _kill_orphan(future: asyncio.Future[dict]) -> None:
    if not future.cancelled() and future.exception() is None:
        kill_pid(future.result()["pid"])


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    """``socket.send_fds`` on a non-blocking socket, waiting while its buffer is full."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            if fds:
                socket.send_fds(sock, [data], fds)
            else:
                sock.send(data)
            return
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock, _resolve, writable)
            try:
                await writable
            finally:
                loop.remove_writer(sock)
