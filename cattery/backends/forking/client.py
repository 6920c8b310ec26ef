"""The backend's side of forking parents: start one per agent, ask it for children.

``ForkServers`` (owned by a ``LocalBackend``) keeps one ``ForkServer`` per agent, for the
agent's current spec (deployment, image, interpreter and environment): a spawn for a new
spec replaces the agent's parent. A parent that died is started again on the next spawn;
one that could not load its bot (or started threads while importing) marks its spec as
not forkable, and that spec's instances are plain processes from then on.

A forked child is not the backend's child but the parent's: the backend watches it
through psutil (``cattery.backends.local.forkserver.ForkedProcess``), with the exit code
the parent reports when it reaps the child. Nothing here imports the local backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from cattery.backends.base import InstanceSpec
from cattery.backends.forking import wire
from cattery.backends.walls.cgroups import Cgroup
from cattery.backends.walls.policy import Launch
from cattery.files import open_private_append
from cattery.tasks import OwnedTasks

PARENT_MODULE = "cattery.backends.forking.parent"
#: how long a parent may take to import its bot before it is given up on
DEFAULT_LOAD_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 5.0


class ForkFailed(Exception):
    """The parent could not fork this instance (it died, or ``fork`` failed)."""


class ParentUnavailable(ForkFailed):
    """The parent did not load its bot: this spec can't be forked."""


def fork_supported() -> bool:
    """Forking a loaded interpreter is safe (and tested) on Linux only."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def spec_key(spec: InstanceSpec) -> str:
    """Identifies what a parent has loaded: two specs with one key share a parent."""
    material = json.dumps(
        [
            spec.agent_key,
            spec.deployment_id,
            spec.image,
            str(spec.python or ""),
            sorted(spec.env.items()),
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ParentLaunch:
    """How to start the parent for one spec: interpreter, bot, folder, environment, log."""

    python: str
    bot: str
    cwd: Path
    env: Mapping[str, str]
    log_path: Path
    #: the parent's walls: its program -> how to launch it and the cgroup it joins
    wrap: Callable[[list[str]], tuple[Launch, Cgroup | None]] | None = None


class ForkServer:
    """One forking parent process. Owned by ``ForkServers``; owns the parent's pid (not
    its children: each belongs to the instance handle that asked for it)."""

    def __init__(self, key: str, launch: ParentLaunch, lifeline_fd: int) -> None:
        self.key = key
        self.launch = launch
        self._lifeline_fd = lifeline_fd
        self._popen: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[dict] | None = None
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._next_id = 0
        self._exits: dict[int, int] = {}
        #: why the parent refused to serve, when it said so before exiting
        self._refusal: str | None = None
        self._gone = asyncio.Event()
        self._tasks = OwnedTasks(f"forking parent {key}")
        self._cgroup: Cgroup | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and not self._gone.is_set()

    async def start(self, timeout: float) -> None:
        """Start the parent; return once it has loaded the bot, else ``ParentUnavailable``."""
        loop = asyncio.get_running_loop()
        ours, theirs = wire.socket_pair()
        self._sock = ours
        ours.setblocking(False)
        self._ready = loop.create_future()
        try:
            self._popen = self._launch(theirs)
        except OSError as exc:
            self._gone.set()
            raise ParentUnavailable(f"could not start {self.launch.python}: {exc}") from exc
        finally:
            theirs.close()
        self._tasks.spawn(self._read_task(), "read_task")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self.aclose()
            raise ParentUnavailable(f"did not load its bot within {timeout:g} s") from None
        except ForkFailed as exc:
            await self.aclose()
            if self._refusal is not None:
                raise ParentUnavailable(self._refusal) from exc
            code = self._popen.poll() if self._popen else None
            raise ParentUnavailable(f"exited with code {code} while loading its bot") from exc

    def _launch(self, theirs: socket.socket) -> subprocess.Popen[bytes]:
        program = [
            self.launch.python,
            "-m",
            PARENT_MODULE,
            self.launch.bot,
            "--control-fd",
            str(theirs.fileno()),
            "--lifeline-fd",
            str(self._lifeline_fd),
        ]
        if self.launch.wrap is None:
            launch = Launch(program, dict(self.launch.env), str(self.launch.cwd), None)
        else:
            launch, self._cgroup = self.launch.wrap(program)
        with open_private_append(self.launch.log_path) as log:
            popen = subprocess.Popen(
                launch.args,
                pass_fds=[theirs.fileno(), self._lifeline_fd],
                stdin=subprocess.DEVNULL if launch.plan is None else subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=launch.env,
                cwd=launch.cwd,
                start_new_session=True,  # a terminal's Ctrl-C is the control plane's
            )
        if launch.plan is not None:
            assert popen.stdin is not None
            try:
                popen.stdin.write(launch.plan)
                popen.stdin.close()
            except OSError:
                pass  # it died at once; the read task reports it
        return popen

    async def fork(self, env: Mapping[str, str], sock: socket.socket, log_fd: int) -> int:
        """A new child serving on ``sock`` and logging to ``log_fd``; its pid."""
        if not self.alive or self._sock is None:
            raise ForkFailed("the forking parent is gone")
        loop = asyncio.get_running_loop()
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[int] = loop.create_future()
        self._pending[request_id] = future
        message = {"op": "fork", "id": request_id, "env": dict(env), "one_session": True}
        try:
            await _send_fds(self._sock, wire.encode(message), [sock.fileno(), log_fd])
        except OSError as exc:
            self._pending.pop(request_id, None)
            raise ForkFailed(f"could not reach the forking parent: {exc}") from exc
        try:
            pid = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_kill_orphan)  # nobody will own that child
            raise
        self._exits.pop(pid, None)  # a reused pid: an older child's code is not this one's
        return pid

    def exit_code(self, pid: int) -> int | None:
        return self._exits.get(pid)

    async def aclose(self) -> None:
        """Close the control socket (the parent exits on end of file), wait, then kill.
        Children are not touched. Idempotent."""
        if self._sock is not None:
            self._sock.close()
        await self._tasks.aclose()
        self._fail_pending(ForkFailed("the forking parent was closed"))
        self._gone.set()
        popen = self._popen
        try:
            if popen is None or await _exited(popen, STOP_GRACE_SECONDS):
                return
            logger.warning(f"Forking parent {popen.pid} ignored its closed socket; killing it")
            popen.kill()
            await _exited(popen, STOP_GRACE_SECONDS)
        finally:
            if self._cgroup is not None:  # what its bot started at import goes with it
                await asyncio.to_thread(self._cgroup.kill_and_remove)

    async def _read_task(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._sock is not None
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
            self._gone.set()
            if self._popen is not None:
                self._popen.poll()  # reap it, if it has exited
            self._fail_pending(ForkFailed("the forking parent exited"))

    def _dispatch(self, message: dict) -> None:
        event = message.get("event")
        if event == "exit":
            self._exits[int(message["pid"])] = int(message["code"])
        elif event == "refused":
            self._refusal = str(message.get("reason") or "refused to serve")
        elif event == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(message)
        else:
            future = self._pending.pop(message.get("id"), None)  # type: ignore[arg-type]
            if future is None or future.done():
                if "pid" in message:  # an answer nobody awaits any more
                    _kill_pid(int(message["pid"]))
                return
            if "pid" in message:
                future.set_result(int(message["pid"]))
            else:
                future.set_exception(ForkFailed(str(message.get("error", "no pid"))))

    def _fail_pending(self, exc: ForkFailed) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: start() may not be waiting any more
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()


async def _exited(popen: subprocess.Popen[bytes], timeout: float) -> bool:
    """Poll ``popen`` (reaping it) until it exits or ``timeout`` passes; whether it exited."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if popen.poll() is not None:
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)


def _kill_orphan(future: asyncio.Future[int]) -> None:
    if not future.cancelled() and future.exception() is None:
        _kill_pid(future.result())


def _kill_pid(pid: int) -> None:
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
            socket.send_fds(sock, [data], fds)
            return
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(sock, _resolve, writable)
            try:
                await writable
            finally:
                loop.remove_writer(sock)
