"""A cgroup v2 group per instance: killed whole when its session ends, limited by its profile.

The groups live under ``cattery/`` inside the control plane's own v2 cgroup (where the
unified hierarchy is mounted and writable). Killing a group (``cgroup.kill``) reaches every
process in it, however it was started: its own process group, ``setsid``, a double fork.
``memory.max`` and ``cpu.max`` are set where the hierarchy hands those controllers down;
on a hybrid machine whose controllers all belong to cgroup v1 the group still contains
and kills, and memory falls back to ``RLIMIT_AS`` (``probe.py`` says which).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from loguru import logger

TREE_NAME = "cattery"
CPU_PERIOD_US = 100_000
KILL_WAIT_SECONDS = 5.0
#: an empty group older than this, found at start, is a killed control plane's leftover
SWEEP_AGE_SECONDS = 60.0


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
        """Kill what is left, wait for it to be gone, remove the group; whether it went."""
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


class CgroupTree:
    """The ``cattery/`` group holding every instance's group; made once by the probe."""

    def __init__(self, root: Path, controllers: frozenset[str]) -> None:
        self.root = root
        self.controllers = controllers

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
        for controller in ("memory", "cpu"):
            if controller not in available:
                continue
            for level in (base, root):
                with contextlib.suppress(OSError):
                    (level / "cgroup.subtree_control").write_text(f"+{controller}")
        enabled = frozenset((root / "cgroup.subtree_control").read_text().split())
        tree = cls(root, enabled & {"memory", "cpu"})
        tree.sweep()
        return tree

    def sweep(self, min_age: float = SWEEP_AGE_SECONDS) -> int:
        """Remove empty groups left by control planes that were killed (a running
        instance's group is never empty); how many went. A group younger than ``min_age``
        may be one another control plane is about to fill, and is left alone."""
        removed = 0
        now = time.time()
        for path in self.root.iterdir():
            group = Cgroup(path)
            try:
                if not path.is_dir() or now - path.stat().st_mtime < min_age:
                    continue
                if group.populated or group.pids():
                    continue
                path.rmdir()
                removed += 1
            except OSError:
                continue
        return removed

    def create(self, name: str) -> Cgroup:
        path = self.root / name
        path.mkdir(exist_ok=True)
        return Cgroup(path)

    def get(self, name: str) -> Cgroup | None:
        path = self.root / name
        return Cgroup(path) if path.is_dir() else None
