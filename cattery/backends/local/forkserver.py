"""A forked instance as the local backend sees it: a process that is not its child.

The instance was forked by the agent's forking parent (``cattery.backends.forking``), so
the backend can't ``waitpid`` it; it is watched through psutil, as an adopted process is,
and its exit code is the one the parent reports when it reaps it.
"""

from __future__ import annotations

import time

import psutil

from cattery.backends.forking.client import ForkServer
from cattery.backends.local.proc import ProcessRef

#: how long a child that is gone may wait for its exit code while its parent is alive
EXIT_CODE_GRACE_SECONDS = 1.0
#: while the parent is alive it reports each exit; /proc is read this often as a backstop
RUNNING_CHECK_SECONDS = 1.0


class ForkedProcess(ProcessRef):
    """A child of a forking parent, watched through psutil (it is not our child).

    Its exit code comes from the parent, which reaps it: while the parent lives, a child
    that is gone counts as exited once its code has arrived (or after a short grace).
    Polls are cheap while the parent lives (the exit watcher polls ten times a second per
    instance): ``/proc`` is read at most once a second then, as a backstop.
    Signals go only to a child still running, so a reaped pid is never signalled.
    """

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self._server = server
        self._done: tuple[bool, int | None] | None = None
        self._gone_since: float | None = None
        self._next_check = 0.0
        try:
            self._proc: psutil.Process | None = psutil.Process(pid)
            self.create_time = self._proc.create_time()
        except psutil.Error:
            self._proc, self.create_time = None, 0.0

    def poll(self) -> tuple[bool, int | None]:
        if self._done is not None:
            return self._done
        code = self._server.exit_code(self.pid)
        if code is None:
            now = time.monotonic()
            if self._server.alive and self._gone_since is None and now < self._next_check:
                return False, None  # its parent will report the exit
            self._next_check = now + RUNNING_CHECK_SECONDS
            if self._running():
                return False, None
            self._gone_since = self._gone_since or now
            if self._server.alive and now - self._gone_since < EXIT_CODE_GRACE_SECONDS:
                return False, None
        self._done = (True, code)
        return self._done

    def signal(self, sig: int) -> bool:
        if not self._running():
            return False
        return super().signal(sig)

    def signal_group(self, sig: int) -> bool:
        if not self._running():
            return False
        return super().signal_group(sig)

    def _running(self) -> bool:
        try:
            return (
                self._proc is not None
                and self._proc.is_running()  # also compares the start time
                and self._proc.status() != psutil.STATUS_ZOMBIE
            )
        except psutil.Error:
            return False
