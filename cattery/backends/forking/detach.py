"""What a process forked from a parent does first: leave that parent behind.

The parent waits for its child to lead a session (``started``) before it tells the
backend the child's pid, so a pid the backend holds always names a group it may signal;
the wait is for the child's first steps, while the backend has more to do before it
needs the child anyway.

Both kinds of fork do it: an agent's parent formed by the shared parent (``shared.py``)
and an instance forked by its agent's parent (``child.py``). Standard library only.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import NoReturn

#: signals the parent (or a library it imported) may have claimed, as a fresh Python has
#: them; SIGPIPE stays ignored, as Python sets it at start-up
FRESH_HANDLERS = (
    (signal.SIGCHLD, signal.SIG_DFL),
    (signal.SIGTERM, signal.SIG_DFL),
    (signal.SIGHUP, signal.SIG_DFL),
    (signal.SIGINT, signal.default_int_handler),
)


def detach(*, log_fd: int, started_fd: int, parent_fds: Iterable[int]) -> None:
    """Lead a session of our own (the parent's death, or a signal to its group, spares
    us; our group is ours to signal) and say so on ``started_fd`` (the parent answers
    with our pid only then), take default signal handling back, close the parent's
    descriptors, read nothing and write to ``log_fd``."""
    leave_parent(started_fd=started_fd, parent_fds=parent_fds)
    write_to(log_fd)


def leave_parent(*, started_fd: int, parent_fds: Iterable[int]) -> None:
    """``detach`` up to its output: what a spare child does before it has a log."""
    os.setsid()
    os.write(started_fd, b".")
    os.close(started_fd)
    signal.set_wakeup_fd(-1)
    for sig, handler in FRESH_HANDLERS:
        signal.signal(sig, handler)
    for fd in parent_fds:
        try:
            os.close(fd)
        except OSError:
            pass


def write_to(log_fd: int) -> None:
    """Read nothing; write to ``log_fd``."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def run_then_exit(work: Callable[[], object]) -> NoReturn:
    """Run what a forked process is for, then end it with ``os._exit`` (nothing of the
    parent's loop or exit handlers runs): 0 once ``work`` returns, ``SystemExit``'s code,
    or 1 after printing the traceback of anything else."""
    code = 1
    try:
        work()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        flush_and_exit(code)


def flush_and_exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
