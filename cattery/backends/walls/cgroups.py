"""A cgroup v2 group per instance: killed whole when its session ends, limited by its profile.

The groups live under ``cattery/`` inside the control plane's own v2 cgroup (where the
unified hierarchy is mounted and writable). Killing a group (``cgroup.kill``) reaches every
process in it, however it was started: its own process group, ``setsid``, a double fork.
``memory.max`` and ``cpu.max`` are set where the hierarchy hands those controllers down;
on a hybrid machine whose controllers all belong to cgroup v1 the group still contains
and kills, and memory falls back to ``RLIMIT_AS`` (``probe.py`` says which).

A forking parent has a subtree of its own, ``cattery/parent-.../``: ``parent`` holds the
parent, and each instance it forks has its group beside it, so the parent (which runs as
the organization's user) may have its children born in theirs (``clone3`` with
``CLONE_INTO_CGROUP`` needs write access to the destination's ``cgroup.procs`` and to the
common ancestor's). The delegation is as narrow as that: the subtree's own ``cgroup.procs``
is the organization's, and an instance group's only from its creation until its child is
born (``seal``); directories, limits and every other file stay root's. A controller that
is not threaded is enabled in the subtree (``closing``), so no process can live in the
subtree's group itself: every process of it is in a limited leaf. A bot can thus move
itself only into a group of its own agent's being born, never into another agent's or
another organization's (their common ancestor, ``cattery/``, is root's).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

TREE_NAME = "cattery"
CPU_PERIOD_US = 100_000
KILL_WAIT_SECONDS = 5.0
#: an empty group older than this, found at start, is a killed control plane's leftover
SWEEP_AGE_SECONDS = 60.0
#: a forking parent's subtree is named so; the parent's own group in it is ``PARENT_LEAF``
PARENT_GROUP_PREFIX = "parent-"
PARENT_LEAF = "parent"
#: controllers that can't be threaded: one enabled in a group's subtree keeps processes
#: out of the group itself (cgroup v2's no-internal-process rule)
DOMAIN_CONTROLLERS = ("memory", "io", "hugetlb", "rdma", "misc")


def v2_mount() -> Path | None:
    """Where the unified (v2) hierarchy is mounted, if it is."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        before, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            return Path(before.split(" ")[4])
    return None


def own_v2_path() -> str | None:
    """This process's cgroup in the unified hierarchy (``0::/path``)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return None


class Cgroup:
    """One group; owned by an instance handle (or a forking parent's launcher)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def name(self) -> str:
        return self.path.name

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def _write(self, name: str, value: str) -> None:
        (self.path / name).write_text(value)

    def add(self, pid: int) -> None:
        self._write("cgroup.procs", f"{pid}\n")

    def delegate(self, uid: int, gid: int) -> None:
        """Let ``uid`` move processes into this group (with write access to a common
        ancestor's ``cgroup.procs`` too); nothing else of the group becomes theirs."""
        os.chown(self.path / "cgroup.procs", uid, gid)

    def seal(self) -> None:
        """Take a delegation back: only we may move processes in from now on."""
        with contextlib.suppress(OSError):
            os.chown(self.path / "cgroup.procs", os.geteuid(), os.getegid())

    def open_dir(self) -> int:
        """A descriptor naming the group (``O_PATH``), for a child to be born in it."""
        return os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def enable(self, controllers: list[str]) -> frozenset[str]:
        """Enable ``controllers`` for the groups below this one; those it has then."""
        for controller in controllers:
            with contextlib.suppress(OSError):
                self._write("cgroup.subtree_control", f"+{controller}")
        return frozenset(self._read("cgroup.subtree_control").split())

    def limit(self, *, memory_bytes: int | None, cpus: float | None) -> None:
        """Profile limits, for the controllers this group has."""
        if memory_bytes is not None:
            self._write("memory.max", str(memory_bytes))
            with contextlib.suppress(OSError):
                self._write("memory.swap.max", "0")
            with contextlib.suppress(OSError):
                self._write("memory.oom.group", "1")  # an OOM kill takes the whole instance
        if cpus is not None:
            self._write("cpu.max", f"{int(cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")

    def _event(self, source: str, key: str) -> int:
        for line in self._read(source).splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
        return 0

    @property
    def populated(self) -> bool:
        return self._event("cgroup.events", "populated") == 1

    @property
    def oom_killed(self) -> bool:
        """Whether the kernel killed a process here for the group's memory limit."""
        return self._event("memory.events", "oom_kill") > 0

    def pids(self) -> list[int]:
        return [int(p) for p in self._read("cgroup.procs").split()]

    def kill(self) -> None:
        """SIGKILL every process in the group (``cgroup.kill``, else one by one)."""
        try:
            self._write("cgroup.kill", "1")
            return
        except OSError:
            pass
        for pid in self.pids():
            with contextlib.suppress(OSError):
                os.kill(pid, 9)

    def kill_and_remove(self, timeout: float = KILL_WAIT_SECONDS) -> bool:
        """Kill what is left, wait for it to be gone, remove the group; whether it went.
        A forking parent's subtree goes with the last group in it."""
        try:
            return self._kill_and_remove(timeout)
        finally:
            self._tidy_parent_group()

    def _kill_and_remove(self, timeout: float) -> bool:
        if not self.path.exists():
            return True
        deadline = time.monotonic() + timeout
        while self.populated or self.pids():
            self.kill()
            if time.monotonic() > deadline:
                logger.warning(f"cgroup {self.path} still has processes; left in place")
                return False
            time.sleep(0.02)
        try:
            self.path.rmdir()
        except OSError as exc:
            logger.warning(f"Could not remove cgroup {self.path}: {exc}")
            return False
        return True

    def _tidy_parent_group(self) -> None:
        """Remove the forking parent's subtree this group was in, once nothing is left in
        it: its parent's group when that is empty (the parent is gone: it may have been
        a killed control plane's), then the subtree when no instance's group remains.
        A removal the kernel refuses (a group still in use) leaves it for its last user."""
        above = self.path.parent
        if not above.name.startswith(PARENT_GROUP_PREFIX):
            return
        for path in (above / PARENT_LEAF, above):
            with contextlib.suppress(OSError):
                path.rmdir()


@dataclass(frozen=True)
class ParentGroup:
    """A forking parent's subtree (see the module's docstring): ``group`` holds ``leaf``,
    the parent's own group, and a group per instance it forks (``instance``)."""

    group: Cgroup
    leaf: Cgroup
    #: whether the parent may have children born in the subtree (delegated, or ours)
    forks_into: bool
    #: the user the subtree is delegated to (None: the parent runs as we do)
    uid: int | None = None
    gid: int | None = None

    def instance(self, name: str) -> Cgroup:
        """A new group for one of the parent's children, which may be born in it until
        it is sealed."""
        path = self.group.path / name
        path.mkdir(exist_ok=True)
        group = Cgroup(path)
        if self.forks_into and self.uid is not None and self.gid is not None:
            try:
                group.delegate(self.uid, self.gid)
            except OSError:
                with contextlib.suppress(OSError):
                    path.rmdir()
                raise
        return group


class CgroupTree:
    """The ``cattery/`` group holding every instance's group; made once by the probe."""

    def __init__(self, root: Path, controllers: frozenset[str], closing: str | None = None) -> None:
        self.root = root
        #: the limiting controllers instances' groups have (memory, cpu)
        self.controllers = controllers
        #: a controller that is not threaded, enabled here: it keeps a forking parent's
        #: subtree's own group empty of processes (None: subtrees can't be closed)
        self.closing = closing

    @classmethod
    def open(cls) -> CgroupTree:
        """The tree under this process's own v2 cgroup; OSError where it can't be made."""
        mount, own = v2_mount(), own_v2_path()
        if mount is None or own is None:
            raise OSError("no cgroup v2 hierarchy is mounted")
        base = mount / own.lstrip("/")
        root = base / TREE_NAME
        root.mkdir(exist_ok=True)
        if not (root / "cgroup.kill").exists():
            raise OSError("this kernel's cgroups have no cgroup.kill")
        available = set((base / "cgroup.controllers").read_text().split())
        wanted = [c for c in ("memory", "cpu") if c in available]
        if "memory" not in wanted:
            wanted += [c for c in DOMAIN_CONTROLLERS if c in available][:1]
        Cgroup(base).enable(wanted)
        enabled = Cgroup(root).enable(wanted)
        closing = next((c for c in DOMAIN_CONTROLLERS if c in enabled), None)
        tree = cls(root, enabled & {"memory", "cpu"}, closing)
        tree.sweep()
        return tree

    def sweep(self, min_age: float = SWEEP_AGE_SECONDS) -> int:
        """Remove empty groups left by control planes that were killed (a running
        instance's group is never empty); how many went. A group younger than ``min_age``
        may be one another control plane is about to fill, and is left alone."""
        removed = 0
        now = time.time()
        for path in self.root.iterdir():
            if path.name.startswith(PARENT_GROUP_PREFIX) and path.is_dir():
                removed += sum(_remove_stale(inner, now, min_age) for inner in path.iterdir())
            removed += _remove_stale(path, now, min_age)
        return removed

    def create(self, name: str) -> Cgroup:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return Cgroup(path)

    def parent_group(self, name: str, uid: int | None, gid: int | None) -> ParentGroup:
        """A forking parent's subtree (``name`` starts with ``PARENT_GROUP_PREFIX``),
        delegated to ``uid`` when it can be closed; its parent's group still unlimited."""
        group = self.create(name)
        leaf = Cgroup(group.path / PARENT_LEAF)
        wanted = set(self.controllers) | ({self.closing} if self.closing else set())
        try:
            closed = any(c in group.enable(sorted(wanted)) for c in DOMAIN_CONTROLLERS)
            leaf.path.mkdir(exist_ok=True)
            if closed and uid is not None and gid is not None:
                group.delegate(uid, gid)
        except OSError:
            for path in (leaf.path, group.path):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise
        return ParentGroup(group, leaf, forks_into=closed or uid is None, uid=uid, gid=gid)

    def get(self, name: str) -> Cgroup | None:
        path = self.root / name
        return Cgroup(path) if path.is_dir() else None


def _remove_stale(path: Path, now: float, min_age: float) -> int:
    """1 if ``path`` was a group left empty for ``min_age`` seconds and is gone now."""
    group = Cgroup(path)
    try:
        if not path.is_dir() or now - path.stat().st_mtime < min_age:
            return 0
        if group.populated or group.pids():
            return 0
        path.rmdir()
    except OSError:
        return 0
    return 1
