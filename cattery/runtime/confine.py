"""What an instance does to itself before it serves, and before it exits.

- It is not dumpable: its ``/proc/<pid>/environ`` (the agent's secrets) and memory become
  root's, so another instance running as the same user can't read them or attach to it.
- It is a *subreaper*: whatever its bot starts and abandons (a ``setsid``, a double fork)
  is re-parented to it rather than to PID 1, and it kills all of that before it exits.
- With ``CATTERY_MEMORY_LIMIT_BYTES`` set (where cgroups can't limit memory), its address
  space may grow by at most that much beyond its size when it starts serving.

Linux only; elsewhere these are no-ops. Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import sys
import time

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
REAP_ROUNDS = 50
#: what ``RLIMIT_AS`` failures look like to the bot: a ``MemoryError``
OUT_OF_MEMORY_ERRORS = (MemoryError,)


def _prctl(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)  # this process's C library, found at once
    return libc.prctl(option, value, 0, 0, 0) == 0


def hide_self() -> None:
    """Make this process's ``/proc`` entries (environ above all) root's."""
    _prctl(PR_SET_DUMPABLE, 0)


def address_space_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def confine_self(memory_limit_bytes: int | None) -> None:
    """Before serving: not dumpable, a subreaper, and the memory fallback's limit."""
    hide_self()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    if memory_limit_bytes:
        limit = address_space_bytes() + memory_limit_bytes
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _descendants() -> list[int]:
    """Every process below this one (orphans re-parented here included)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
    me, found, frontier = os.getpid(), [], [os.getpid()]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid != me]
        found += children
        frontier += children
    return found


def reap_descendants() -> int:
    """SIGKILL every process below this one and collect them; how many there were."""
    if not sys.platform.startswith("linux"):
        return 0
    killed: set[int] = set()
    for _ in range(REAP_ROUNDS):
        pids = _descendants()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.01)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
    return len(killed)
