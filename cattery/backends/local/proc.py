"""The one process an instance handle owns: a child it started, or one it adopted.

A child is reaped by ``Popen.poll`` and reports its exit code. An adopted process belongs
to another parent (the control plane that started it is gone), so it is watched through
psutil and its exit code is unknown. Both are identified by pid *and* start time, so a
reused pid is never signalled.
"""

from __future__ import annotations

import os
import subprocess

import psutil


class ProcessRef:
    """A process an instance handle owns; every signal to it goes through here."""

    pid: int
    create_time: float

    def poll(self) -> tuple[bool, int | None]:
        """``(exited, exit code if known)``; never blocks."""
        raise NotImplementedError

    @property
    def exited(self) -> bool:
        return self.poll()[0]

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the process if it still runs; whether it was sent."""
        if self.exited:
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the process group it leads (the instance and its children)."""
        if self.exited or not self._leads_group():
            return self.signal(sig)
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def _leads_group(self) -> bool:
        try:
            return os.getpgid(self.pid) == self.pid
        except ProcessLookupError:
            return False

    def psutil_process(self) -> psutil.Process | None:
        """The psutil view of the process, for sampling; None once it is gone."""
        try:
            proc = psutil.Process(self.pid)
            if not _same_start(proc.create_time(), self.create_time):
                return None
        except psutil.Error:
            return None
        return proc


class ChildProcess(ProcessRef):
    """A process this control plane started (``start_new_session``: it leads its group)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        try:
            self.create_time = psutil.Process(popen.pid).create_time()
        except psutil.Error:
            self.create_time = 0.0  # already gone: poll() reports the exit

    def poll(self) -> tuple[bool, int | None]:
        code = self.popen.poll()
        return code is not None, code

    def signal_group(self, sig: int) -> bool:
        # Not yet reaped, so the pid (and the group it leads) cannot have been reused.
        if self.popen.poll() is not None:
            return False
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


class AdoptedProcess(ProcessRef):
    """A process started by an earlier control plane, reattached from its record."""

    def __init__(self, proc: psutil.Process, create_time: float) -> None:
        self._proc = proc
        self.pid = proc.pid
        self.create_time = create_time

    @classmethod
    def find(cls, pid: int, create_time: float) -> AdoptedProcess | None:
        """The running process ``pid`` if it is the one started at ``create_time``."""
        try:
            proc = psutil.Process(pid)
            if not _same_start(proc.create_time(), create_time):
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return cls(proc, create_time)

    def poll(self) -> tuple[bool, int | None]:
        try:
            # is_running() also compares the start time, so a reused pid reads as exited
            alive = self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        return not alive, None


def _same_start(a: float, b: float) -> bool:
    return abs(a - b) < 0.05  # start times are kept in clock ticks (10 ms)
