"""``os.fork``, with the child born in a cgroup: ``clone3(CLONE_INTO_CGROUP)``.

Moving a process into a cgroup after it started (a write to ``cgroup.procs``) waits some
10 ms in the kernel for an RCU grace period; a child cloned into its cgroup is there from
its first instruction, for the cost of a fork. Python has no ``clone3``, so the syscall is
made here the way ``os.fork`` makes ``fork()`` (CPython's ``os_fork_impl``): audited, with
the GIL held throughout, between ``PyOS_BeforeFork`` and ``PyOS_AfterFork_Child`` (in the
child) or ``PyOS_AfterFork_Parent``, so the interpreter's locks, its thread states and the
``os.register_at_fork`` hooks (``random``'s reseeding, ``logging``'s locks) are handled as
on any fork.

What glibc's ``fork()`` adds is not done: the C library's ``pthread_atfork`` handlers do
not run and its cached thread id of the calling thread stays the parent's. That is sound
for a parent with a single native thread (no lock another thread could hold; no pool of
threads a library must stop), which is what a forking parent checks before using it.

A kernel without ``clone3`` (``ENOSYS``), without ``CLONE_INTO_CGROUP`` (``EINVAL``), or a
caller not allowed into the cgroup (``EACCES``/``EPERM``) fails with ``OSError`` and no
child: the caller forks the ordinary way then. Standard library only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import sys

#: ``__NR_clone3`` where the syscall table is the generic one (x86-64 numbers it alike)
SYS_CLONE3 = {"x86_64": 435, "aarch64": 435}.get(platform.machine())
CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` up to ``cgroup`` (``CLONE_ARGS_SIZE_VER2``)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


_api = ctypes.pythonapi
for _name in ("PyOS_BeforeFork", "PyOS_AfterFork_Parent", "PyOS_AfterFork_Child"):
    getattr(_api, _name).argtypes = []
    getattr(_api, _name).restype = None
#: ``PyDLL``: the GIL stays held across the call, as ``os.fork`` holds it across ``fork()``
_syscall = ctypes.PyDLL(None, use_errno=True).syscall
_syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]
_syscall.restype = ctypes.c_long


def fork_into_cgroup(cgroup_fd: int) -> int:
    """Fork; the child starts in the cgroup ``cgroup_fd`` (a directory, ``O_PATH`` will
    do) names. 0 in the child, the child's pid in the parent; ``OSError`` and no child
    when the kernel refuses."""
    if SYS_CLONE3 is None:
        raise OSError(errno.ENOSYS, f"clone3 is not known on {platform.machine()}")
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    ref, size = ctypes.byref(args), ctypes.sizeof(args)
    sys.audit("os.fork")
    _api.PyOS_BeforeFork()
    pid = _syscall(SYS_CLONE3, ref, size)
    if pid == 0:
        _api.PyOS_AfterFork_Child()
        return 0
    _api.PyOS_AfterFork_Parent()
    if pid < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"clone3: {os.strerror(code)}")
    return pid
