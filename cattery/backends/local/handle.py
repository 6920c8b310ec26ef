"""One instance of the local backend: a ``cattery runtime`` process and what watches it.

The handle owns the process (only it signals the pid), the log tail and an exit watcher;
both run as tasks in its ``OwnedTasks`` and end with ``aclose``. The backend samples its
CPU and memory (``metrics.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
from loguru import logger

from cattery.backends.base import (
    InstanceFailed,
    InstanceSpec,
    InstanceStartTimeout,
    InstanceStatus,
    LineSink,
)
from cattery.backends.handles import TERMINAL, HandleBase, Probe, probe_livez
from cattery.backends.local.logtail import LogTail
from cattery.backends.local.proc import ProcessRef
from cattery.backends.local.record import AdoptRecord
from cattery.backends.walls.cgroups import Cgroup
from cattery.contract import OUT_OF_MEMORY_LINE
from cattery.tasks import OwnedTasks

EXIT_POLL_SECONDS = 0.1
#: how long an instance that closed its readiness pipe unsaid may take to exit
SILENT_EXIT_SECONDS = 5.0
#: how long a SIGKILLed process may take to disappear before we give up waiting
KILL_WAIT_SECONDS = 10.0


class LocalInstanceHandle(HandleBase):
    """A ``cattery runtime`` process on this machine. Owned by one pool (or the backend).

    ``aclose`` is idempotent and always ends in STOPPED or FAILED with the process gone.
    """

    def __init__(
        self,
        *,
        instance_id: str,
        spec: InstanceSpec,
        process: ProcessRef,
        port: int,
        token: str,
        log_path: Path,
        line_sink: LineSink,
        log_offset: int = 0,
        status: InstanceStatus = InstanceStatus.STARTING,
        on_closed: Callable[[LocalInstanceHandle], None] | None = None,
        cgroup: Cgroup | None = None,
        memory_bytes: int | None = None,
        joining: Awaitable[None] | None = None,
        ready_fd: int | None = None,
        on_ready: Callable[[], None] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.id = instance_id
        self.host = host
        self.spec = spec
        self.port = port
        self.log_path = log_path
        self._process = process
        self._token = token
        self._status = status
        self._exit_code: int | None = None
        self._exited = asyncio.Event()
        self._stop_requested = False
        self._on_closed = on_closed
        #: every process of the instance, killed whole when it is closed; None: the
        #: runtime is a subreaper and the handle kills the tree it sees
        self.cgroup = cgroup
        #: the move into ``cgroup``, when it follows the start (a forked child not born there)
        self._joining = joining
        #: the read end of the pipe a forked child says it serves on (None: probe /livez)
        self._ready_fd = ready_fd
        #: called once when it is ready (its parent forks its next spare child then)
        self._on_ready = on_ready
        self._memory_bytes = memory_bytes
        self._oom_noted = False
        self._tail = LogTail(instance_id, log_path, line_sink, offset=log_offset)
        self._tasks = OwnedTasks(f"instance {instance_id}")
        self._tasks.spawn(self._tail.follow(), "log_tail_task")
        self._tasks.spawn(self._watch_exit(), "exit_watch_task")

    # -- the InstanceHandle protocol ---------------------------------------------------

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        return self._token

    @property
    def forked(self) -> bool:
        """Whether the instance was forked from its agent's pre-imported parent."""
        from cattery.backends.local.forkserver import ForkedProcess

        return isinstance(self._process, ForkedProcess)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def create_time(self) -> float:
        return self._process.create_time

    @property
    def log_offset(self) -> int:
        """Byte offset in the log file just after the last line handed to the sink."""
        return self._tail.offset

    @property
    def exit_code(self) -> int | None:
        return self._exit_code

    def log_context(self) -> dict[str, str]:
        return {
            "instance_id": self.id,
            "agent": self.spec.agent_key,
            "deployment_id": self.spec.deployment_id,
            "pid": str(self._process.pid),
        }

    async def ready(self, timeout: float) -> None:
        """Wait until the instance serves: a forked child says so on its readiness pipe,
        a plain process answers ``/livez`` (polled). Its exit or ``timeout`` fails it."""
        if self._status == InstanceStatus.READY:
            return
        if self._status != InstanceStatus.STARTING:
            raise InstanceFailed(f"instance {self.id} is {self._status}, not starting")
        if self._ready_fd is not None:
            probe, silence = await self._told_ready(timeout), "did not start serving"
        else:
            probe = await probe_livez(self.address, timeout, exited=self._check_exit)
            silence = "did not answer /livez"
        if self._joining is not None:
            await self._joining  # in its cgroup before it may be ready for a session
        if probe is Probe.EXITED:
            self._fail_start(f"exited with code {self._exit_code} before it was ready")
        if probe is Probe.TIMED_OUT:
            self.kill()
            self._fail_start(f"{silence} within {timeout:g} s", InstanceStartTimeout)
        if self._status == InstanceStatus.STARTING:
            self._set_status(InstanceStatus.READY)
        if self._status != InstanceStatus.READY:
            raise InstanceFailed(f"instance {self.id} is {self._status}")
        on_ready, self._on_ready = self._on_ready, None
        if on_ready is not None:
            on_ready()

    async def _told_ready(self, timeout: float) -> Probe:
        """The child's word on its readiness pipe: a byte once it serves (ANSWERED); end
        of file when it exited before (EXITED, once its exit code is in)."""
        fd, self._ready_fd = self._ready_fd, None
        assert fd is not None
        loop = asyncio.get_running_loop()
        said: asyncio.Future[bytes] = loop.create_future()

        def readable() -> None:
            if said.done():
                return
            try:
                said.set_result(os.read(fd, 1))
            except BlockingIOError:
                return
            except OSError:
                said.set_result(b"")

        loop.add_reader(fd, readable)
        try:
            word = await asyncio.wait_for(said, timeout)
        except TimeoutError:
            return Probe.TIMED_OUT
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        if word:
            return Probe.ANSWERED
        if await self._wait_exit(SILENT_EXIT_SECONDS):
            return Probe.EXITED
        self.kill()  # it closed the pipe without serving, and runs on: it won't serve
        return Probe.EXITED

    def _fail_start(self, reason: str, error: type[InstanceFailed] = InstanceFailed) -> None:
        self._tail.read_available(final=self._process.exited)
        if self._status not in TERMINAL:
            self._set_status(InstanceStatus.FAILED)
        lines = self._tail.last_lines()
        message = f"instance {self.id} of {self.spec.agent_key} {reason}"
        raise error(
            f"{message}; last log lines:\n{lines}" if lines else message,
            instance_id=self.id,
            output=lines,
        )

    async def drain(self, timeout: float) -> None:
        """SIGTERM, then wait up to ``timeout`` s for the exit (the runtime finishes its session).

        A drain that times out leaves the process running; ``aclose`` or ``kill`` ends it.
        """
        if self._check_exit():
            return
        self._stop_requested = True
        self._process.signal(signal.SIGTERM)
        self._mark_draining()
        await self._wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL every process of the instance, without grace: its cgroup whole, else
        its process group and every process below it."""
        self._stop_requested = True
        self._kill_all()

    def _kill_all(self) -> None:
        strays = self._descendants() if self.cgroup is None else []
        self._process.signal_group(signal.SIGKILL)
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.kill()
        for stray in strays:
            with contextlib.suppress(psutil.Error):
                stray.kill()

    def _descendants(self) -> list[psutil.Process]:
        proc = self._process.psutil_process()
        if proc is None:
            return []
        try:
            return proc.children(recursive=True)
        except psutil.Error:
            return []

    @property
    def out_of_memory(self) -> bool:
        """Whether the kernel stopped the instance for its profile's memory limit."""
        return self.cgroup is not None and self.cgroup.oom_killed

    def _note_out_of_memory(self) -> None:
        """Put the reason in the instance's own log, where its session's lines are."""
        if self._oom_noted or not self.out_of_memory:
            return
        self._oom_noted = True
        limit = f" of {self._memory_bytes // 2**20} MiB" if self._memory_bytes else ""
        line = f"\n{OUT_OF_MEMORY_LINE}{limit}; the kernel stopped the instance\n"
        with contextlib.suppress(OSError), self.log_path.open("a") as log:
            log.write(line)

    async def wait(self) -> int | None:
        """Wait for the process to exit; its exit code, or None for an adopted process."""
        while True:  # polling, not a child watcher: adopted processes are not our children
            if self._check_exit():
                return self._exit_code
            await asyncio.sleep(EXIT_POLL_SECONDS)

    # -- restarts --------------------------------------------------------------------

    def record(self) -> AdoptRecord:
        """What a restarted control plane needs to reattach this instance with ``adopt``.

        Lines up to ``log_offset`` have been handed to the sink (the tail follows the file
        on its own); store the record again from time to time, as an adopter resumes from
        that offset (at-least-once lines).
        """
        return AdoptRecord(
            instance_id=self.id,
            pid=self._process.pid,
            port=self.port,
            token=self._token,
            log_path=self.log_path,
            log_offset=self._tail.offset,
            spec=self.spec,
            create_time=self._process.create_time,
            cgroup=str(self.cgroup.path) if self.cgroup is not None else None,
        )

    async def read_log(self) -> None:
        """Hand every complete line written so far to the sink (``LogReading``)."""
        await self._tail.catch_up()

    async def detach(self) -> AdoptRecord:
        """Stop watching the instance but leave it running; its record, to adopt it later."""
        await self._tail.catch_up()
        await self._tasks.aclose()
        if self._on_closed is not None:
            self._on_closed(self)
        return self.record()

    # -- internals -------------------------------------------------------------------

    async def _close(self, grace: float) -> None:
        with logger.contextualize(**self.log_context()):
            try:
                if not self._check_exit():
                    self._stop_requested = True
                    self._process.signal(signal.SIGTERM)
                    self._mark_draining()
                    if not await self._wait_exit(grace):
                        logger.warning(f"Instance still running {grace:g} s after SIGTERM; killing")
                        self._kill_all()
                        if not await self._wait_exit(KILL_WAIT_SECONDS):
                            logger.error("Instance survived SIGKILL; giving up waiting")
            finally:
                if self._ready_fd is not None:
                    os.close(self._ready_fd)
                    self._ready_fd = None
                await self._tasks.aclose()
                if self.cgroup is not None:
                    if self._joining is not None:
                        await self._joining  # no move lands in a cgroup being removed
                    self._note_out_of_memory()
                    await asyncio.to_thread(self.cgroup.kill_and_remove)
                await self._tail.catch_up(final=self._process.exited)
                if self._status not in TERMINAL:
                    self._set_status(InstanceStatus.STOPPED)
                if self._on_closed is not None:
                    self._on_closed(self)

    async def _watch_exit(self) -> None:
        await self.wait()
        logger.bind(**self.log_context()).debug(f"Instance exited with code {self._exit_code}")

    def _check_exit(self) -> bool:
        """Poll the process; on its exit record the code and the terminal status."""
        if self._exited.is_set():
            return True
        exited, code = self._process.poll()
        if not exited:
            return False
        self._exit_code = code
        self._exited.set()
        if self._status not in TERMINAL:
            clean = self._stop_requested or code is None or code == 0
            self._set_status(InstanceStatus.STOPPED if clean else InstanceStatus.FAILED)
        return True

    def __repr__(self) -> str:
        return f"<LocalInstanceHandle {self.id} {self._status} pid={self._process.pid}>"
