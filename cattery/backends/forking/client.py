"""The backend's side of the parent lineage: shared parents, agents' parents, their children.

A ``SharedParent`` is one process per interpreter (``shared.py``), started by the backend,
that has imported the common stack. A ``ForkServer`` is one agent's forking parent: the
shared parent forks it (``form``), it enters the agent's walls, then the backend tells it
over its own socket which bot to load with which environment, and asks it for children.
``ForkServers`` (``servers.py``) owns both kinds.

A forked child is not the backend's child but its parent's, and an agent parent is the
shared parent's: the backend watches them through their sockets and pids, with the exit
code each parent reports when it reaps a child. Nothing here imports the local backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from cattery.backends.base import InstanceSpec
from cattery.backends.forking import wire
from cattery.backends.forking.channel import Channel, ForkFailed
from cattery.backends.walls.cgroups import Cgroup, ParentGroup
from cattery.files import open_private_append

__all__ = [
    "DEFAULT_LOAD_TIMEOUT",
    "ForkFailed",
    "ForkServer",
    "ParentLaunch",
    "ParentUnavailable",
    "SharedParent",
    "SharedParentGone",
    "WallsPlan",
    "fork_supported",
    "spec_key",
]

SHARED_MODULE = "cattery.backends.forking.shared"
#: how long a parent may take to import its bot (or a shared parent its stack)
DEFAULT_LOAD_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 5.0
#: how long the exit code of an agent parent that died loading may take to be reported
EXIT_CODE_WAIT_SECONDS = 1.0


class ParentUnavailable(ForkFailed):
    """The parent did not load its bot: this spec can't be forked."""


class SharedParentGone(ForkFailed):
    """The shared parent died before it formed the agent's parent: start a new one."""


def fork_supported() -> bool:
    """Forking a loaded interpreter is safe (and tested) on Linux only."""
    return (
        sys.platform.startswith("linux")
        and hasattr(socket, "send_fds")
        and hasattr(os, "pidfd_open")
    )


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


#: an agent parent's walls: a ``Walls.plan`` (no environment in it) and the cgroup subtree
#: whose ``parent`` group it joins
WallsPlan = Callable[[], tuple[dict[str, object], ParentGroup | None]]


@dataclass(frozen=True)
class ParentLaunch:
    """How to form the parent for one spec: interpreter, bot, folder, environment, log."""

    python: str
    bot: str
    cwd: Path
    env: Mapping[str, str]
    log_path: Path
    #: the parent's walls, made anew for each parent formed (None: just its folder)
    walls: WallsPlan | None = None


class SharedParent:
    """One shared parent process, for one interpreter. Owned by ``ForkServers``; owns its
    process, not the agent parents it formed (each belongs to its ``ForkServer``)."""

    def __init__(
        self, python: str, env: Mapping[str, str], log_path: Path, lifeline_fd: int
    ) -> None:
        self.python = python
        self.env = dict(env)
        self.log_path = log_path
        self._lifeline_fd = lifeline_fd
        self._popen: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._channel is not None and self._channel.alive

    async def start(self, timeout: float) -> None:
        """Start it; return once it has imported the stack, else ``ParentUnavailable``."""
        ours, theirs = wire.socket_pair()
        try:
            self._popen = self._launch(theirs)
        except OSError as exc:
            ours.close()
            raise ParentUnavailable(f"could not start {self.python}: {exc}") from exc
        finally:
            theirs.close()
        self._channel = Channel(ours, f"shared parent {self._popen.pid}")
        try:
            await self._channel.ready(timeout)
        except TimeoutError:
            await self.aclose()
            raise ParentUnavailable(f"did not import the stack within {timeout:g} s") from None
        except ForkFailed as exc:
            await self.aclose()
            why = self._channel.refusal or f"exited with code {self._popen.poll()}"
            raise ParentUnavailable(f"the shared parent of {self.python} {why}") from exc

    def _launch(self, theirs: socket.socket) -> subprocess.Popen[bytes]:
        program = [
            self.python,
            "-P",  # nothing of its folder on the path: it runs no agent code
            "-m",
            SHARED_MODULE,
            "--control-fd",
            str(theirs.fileno()),
            "--lifeline-fd",
            str(self._lifeline_fd),
        ]
        with open_private_append(self.log_path) as log:
            return subprocess.Popen(
                program,
                pass_fds=[theirs.fileno(), self._lifeline_fd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd="/",
                start_new_session=True,  # a terminal's Ctrl-C is the control plane's
            )

    async def form(self, walls: Mapping[str, object], control: socket.socket, log_fd: int) -> int:
        """Fork an agent parent walled in by ``walls``, serving ``control``: its pid."""
        if self._channel is None or not self._channel.alive:
            raise SharedParentGone("the shared parent is gone")
        try:
            reply = await self._channel.request(
                {"op": "parent", "walls": dict(walls)}, [control.fileno(), log_fd]
            )
            return int(reply["pid"])
        except ForkFailed as exc:
            if self._channel.alive:
                raise
            raise SharedParentGone(str(exc)) from exc

    def exit_code(self, pid: int) -> int | None:
        return self._channel.exit_code(pid) if self._channel else None

    async def wait_exit_code(self, pid: int, timeout: float) -> int | None:
        """The exit code of an agent parent it formed, once reported (None: not in time)."""
        if self._channel is None:
            return None
        return await self._channel.wait_exit_code(pid, timeout)

    async def aclose(self) -> None:
        """Close its socket (it exits on end of file), wait, then kill. The agent parents
        it formed are not touched. Idempotent."""
        if self._channel is not None:
            await self._channel.aclose()
        popen = self._popen
        if popen is None or await _exited(lambda: popen.poll() is not None, STOP_GRACE_SECONDS):
            return
        logger.warning(f"Shared parent {popen.pid} ignored its closed socket; killing it")
        popen.kill()
        await _exited(lambda: popen.poll() is not None, STOP_GRACE_SECONDS)


@dataclass
class Spare:
    """A child the parent forked ahead, waiting for its instance, in its own cgroup."""

    pid: int
    cgroup: Cgroup | None


class ForkServer:
    """One agent's forking parent. Owned by ``ForkServers``; owns the parent's process and
    its cgroup (not its children nor their groups: each belongs to the instance handle that
    asked for it; the subtree holding them all goes with the last of them)."""

    def __init__(self, key: str, launch: ParentLaunch) -> None:
        self.key = key
        self.launch = launch
        self._pid: int | None = None
        self._pidfd: int | None = None
        self._channel: Channel | None = None
        self._group: ParentGroup | None = None
        self._spare: Spare | None = None
        #: children it has forked (or handed a spare): its agent is in use from the second
        self.children = 0
        #: the task forking the next spare child, if one is (its owner's)
        self.spare_task: asyncio.Task[None] | None = None
        self._formed_by: SharedParent | None = None
        self._last_fork = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def alive(self) -> bool:
        return self._channel is not None and self._channel.alive

    @property
    def group(self) -> ParentGroup | None:
        """The parent's cgroup subtree, where its children's groups are made."""
        return self._group

    def idle_for(self, now: float) -> float:
        """Seconds since it last forked or a child of it last exited; 0 while one runs."""
        if self._channel is None or self._channel.live_children:
            return 0.0
        return now - max(self._last_fork, self._channel.last_activity)

    async def start(self, shared: SharedParent, timeout: float) -> None:
        """Have ``shared`` form the parent, then load the bot in it; return once loaded,
        else ``ParentUnavailable`` (``SharedParentGone`` if ``shared`` died meanwhile)."""
        ours, theirs = wire.socket_pair()
        walls: dict[str, object] = {"cwd": str(self.launch.cwd)}
        try:
            if self.launch.walls is not None:
                walls, self._group = self.launch.walls()
            with open_private_append(self.launch.log_path) as log:
                self._pid = await shared.form(walls, theirs, log.fileno())
        except BaseException:
            ours.close()
            await self._remove_cgroup()
            raise
        finally:
            theirs.close()
        self._formed_by = shared
        with contextlib.suppress(OSError):
            self._pidfd = os.pidfd_open(self._pid)
        self._channel = Channel(ours, f"forking parent {self._pid}")
        try:
            await self._channel.send(
                {"op": "load", "bot": self.launch.bot, "env": dict(self.launch.env)}
            )
            await self._channel.ready(timeout)
        except TimeoutError:
            await self.aclose()
            raise ParentUnavailable(f"did not load its bot within {timeout:g} s") from None
        except (ForkFailed, OSError) as exc:
            await self.aclose()
            if self._channel.refusal is not None:
                raise ParentUnavailable(self._channel.refusal) from exc
            code = await self._exit_code_of_self()
            raise ParentUnavailable(f"exited with code {code} while loading its bot") from exc
        self._last_fork = time.monotonic()

    @property
    def has_spare(self) -> bool:
        return self._spare is not None

    @property
    def sparing(self) -> bool:
        """A spare child is being forked."""
        return self.spare_task is not None and not self.spare_task.done()

    def take_spare(self) -> Spare | None:
        """The spare child, for the next fork request (which must say so)."""
        spare, self._spare = self._spare, None
        return spare

    async def make_spare(self, cgroup: Cgroup | None) -> None:
        """Have the parent fork a spare child now, in ``cgroup`` (born there where it can
        be, else moved in now: the move's wait is on no start's path)."""
        if self._channel is None or not self._channel.alive or self._spare is not None:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.kill_and_remove)
            return
        group = self._group
        into = cgroup if group is not None and group.forks_into else None
        message: dict[str, object] = {"op": wire.SPARE_OP}
        fd = into.open_dir() if into is not None else None
        if fd is not None:
            message["cgroup"] = True
        try:
            reply = await self._channel.request(message, [] if fd is None else [fd], counted=False)
        except BaseException:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.kill_and_remove)
            raise
        finally:
            if fd is not None:
                os.close(fd)
        if into is not None:
            into.seal()
        if cgroup is not None and not reply.get("cgroup"):
            with contextlib.suppress(OSError):
                await asyncio.to_thread(cgroup.add, reply["pid"])
        if self.alive:
            self._spare = Spare(reply["pid"], cgroup)
        elif cgroup is not None:  # closed meanwhile
            await asyncio.to_thread(cgroup.kill_and_remove)

    async def fork(
        self,
        env: Mapping[str, str],
        sock: socket.socket,
        log_fd: int,
        *,
        ready_fd: int | None = None,
        cgroup: Cgroup | None = None,
        spare: Spare | None = None,
    ) -> tuple[int, bool]:
        """A new child serving on ``sock``, logging to ``log_fd``, saying on ``ready_fd``
        when it serves, born in ``cgroup`` if it can be: ``(its pid, whether it was)``.
        With ``spare`` (taken from ``take_spare``), that child becomes the instance: it is
        in its group already (``(its pid, True)``), unless it died meanwhile and a child
        was forked instead (``(that pid, False)``: it belongs in the spare's group)."""
        if self._channel is None or not self._channel.alive:
            raise ForkFailed("the forking parent is gone")
        self._last_fork = time.monotonic()
        message: dict[str, object] = {"op": "fork", "env": dict(env), "one_session": True}
        if spare is not None:
            message["spare"] = True
        fds = [sock.fileno(), log_fd]
        if ready_fd is not None:
            message["ready"] = True
            fds.append(ready_fd)
        cgroup_fd = cgroup.open_dir() if cgroup is not None else None
        if cgroup_fd is not None:
            message["cgroup"] = True
            fds.append(cgroup_fd)
        try:
            reply = await self._channel.request(message, fds)
        finally:
            if cgroup_fd is not None:
                os.close(cgroup_fd)
        if spare is not None:
            return reply["pid"], reply["pid"] == spare.pid
        return reply["pid"], bool(reply.get("cgroup"))

    def exit_code(self, pid: int) -> int | None:
        return self._channel.exit_code(pid) if self._channel else None

    async def aclose(self) -> None:
        """Close the control socket (the parent exits on end of file), wait, then kill.
        Children are not touched (a spare child is: it never became one). Idempotent."""
        try:
            if self._channel is not None:
                await self._channel.aclose()
            if self.sparing:  # it fails with the channel; its group goes with it
                assert self.spare_task is not None
                await asyncio.wait([self.spare_task], timeout=STOP_GRACE_SECONDS)
            if self._pidfd is not None and not await _exited(self._exited, STOP_GRACE_SECONDS):
                logger.warning(f"Forking parent {self._pid} ignored its closed socket; killing it")
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                await _exited(self._exited, STOP_GRACE_SECONDS)
        finally:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            await self._remove_cgroup()

    def _exited(self) -> bool:
        """Whether the process has exited (its pidfd reads as ready then)."""
        if self._pidfd is None:
            return True
        return bool(select.select([self._pidfd], [], [], 0)[0])

    async def _exit_code_of_self(self) -> int | None:
        shared = self._formed_by
        if shared is None or self._pid is None:
            return None
        return await shared.wait_exit_code(self._pid, EXIT_CODE_WAIT_SECONDS)

    async def _remove_cgroup(self) -> None:
        spare = self.take_spare()
        if spare is not None and spare.cgroup is not None:
            await asyncio.to_thread(spare.cgroup.kill_and_remove)
        if self._group is not None:  # what its bot started at import goes with it
            leaf, self._group = self._group.leaf, None
            await asyncio.to_thread(leaf.kill_and_remove)


async def _exited(check: Callable[[], bool], timeout: float) -> bool:
    """Poll ``check`` until it says the process exited or ``timeout`` passes; whether it did."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if check():
            return True
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.02)
