"""What this machine lets the local backend wall in, and how each instance is launched.

``Walls.probe`` finds out once, at start:

- **users**: running as root, each organization's instances run as its own unprivileged
  user (``tenants.py``) in a private view of the files (``enter.py``): the state dir
  (database, key file, logs) and folders the user could not cross anyway are empty there,
  save what the instance needs. The probe launches a real interpreter that way and
  imports the runtime; if that fails, or cattery is not root, instances run as cattery's
  own user and only one organization may run bots (unless shared tenancy is allowed).
- **processes**: a cgroup v2 group per instance, killed whole, where the unified
  hierarchy is writable; else each instance is a subreaper that kills what it inherits.
- **memory** and **cpu**: ``memory.max``/``cpu.max`` where the v2 hierarchy has those
  controllers; else memory is an ``RLIMIT_AS`` on each instance and CPU is not limited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from cattery.backends.walls.cgroups import Cgroup, CgroupTree, ParentGroup
from cattery.backends.walls.tenants import DEFAULT_UID_BASE, DEFAULT_UID_COUNT, Tenant, TenantIds
from cattery.contract import LEASE_FILE_ENV
from cattery.errors import CatteryError

ENTER_MODULE = "cattery.backends.walls.enter"
PROBE_TIMEOUT_SECONDS = 60.0
#: probe uid -> why tenant users don't work here (None: they do), once per process
_PROBED: dict[int, str | None] = {}


class SharedTenancyRefused(CatteryError):
    status_code = 400
    code = "SHARED_TENANCY_REFUSED"


@dataclass(frozen=True)
class WallsReport:
    """What the walls are on this machine, as ``agent status`` and the start log say."""

    users: bool
    processes: str  # "cgroup2" | "subreaper"
    memory: str  # "cgroup2" | "rlimit_as"
    cpu: str  # "cgroup2" | "none"
    reason: str | None = None  # why instances share cattery's user, when they do

    def as_dict(self) -> dict[str, object]:
        return {
            "tenantUsers": self.users,
            "processes": self.processes,
            "memory": self.memory,
            "cpu": self.cpu,
        }

    def describe(self) -> str:
        users = (
            "one unprivileged user per organization, in a private view of the files"
            if self.users
            else f"cattery's own user for every organization ({self.reason})"
        )
        return (
            f"Instances run as {users}; their processes are contained by {self.processes}; "
            f"memory is limited by {self.memory}, CPU by {self.cpu}"
        )


@dataclass(frozen=True)
class Launch:
    """How to start one process of an instance (a plain runtime or a forking parent)."""

    args: list[str]
    env: dict[str, str]
    cwd: str
    plan: bytes | None  # what ``enter`` reads from its plan descriptor, when it is used


def _ancestors(path: Path) -> list[Path]:
    return list(reversed(path.parents))


def blocked_ancestor(path: Path, uid: int, gid: int) -> Path | None:
    """The shallowest folder above ``path`` that ``uid`` (in no group but ``gid``) can't
    cross, or None."""
    for folder in _ancestors(path):
        try:
            st = folder.stat()
        except OSError:
            return None
        if st.st_uid == uid:
            bit = 0o100
        elif st.st_gid == gid:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            return folder
    return None


def interpreter_folders(python: str) -> set[Path]:
    """The folders an interpreter needs: its venv (if it is one), its real prefix, and the
    prefix its ``pyvenv.cfg`` names."""
    given = Path(python).absolute()
    folders = {given.parent.parent, Path(os.path.realpath(given)).parent.parent}
    cfg = given.parent.parent / "pyvenv.cfg"
    try:
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                home = Path(value.strip())
                folders |= {home.parent, Path(os.path.realpath(home)).parent}
    except OSError:
        pass
    return folders


def own_import_folders() -> set[Path]:
    """Where this interpreter finds cattery and its packages (an editable checkout too)."""
    folders = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    folders |= interpreter_folders(sys.executable)
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            folders.add(Path(entry))
    import cattery

    folders.add(Path(cattery.__file__).resolve().parent.parent)
    return {f.resolve() for f in folders if f.exists()}


class Walls:
    """The walls of one local backend: owns its tenants' uids and its cgroup tree."""

    def __init__(
        self,
        state_dir: Path,
        *,
        tenants: TenantIds | None,
        tree: CgroupTree | None,
        reason: str | None = None,
        allow_shared: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.tenants = tenants
        self.tree = tree
        self.allow_shared = allow_shared
        self._import_folders = own_import_folders()
        self._shared_by: str | None = None
        memory = "cgroup2" if tree is not None and "memory" in tree.controllers else "rlimit_as"
        cpu = "cgroup2" if tree is not None and "cpu" in tree.controllers else "none"
        self.report = WallsReport(
            users=tenants is not None,
            processes="cgroup2" if tree is not None else "subreaper",
            memory=memory,
            cpu=cpu,
            reason=reason,
        )

    @classmethod
    def probe(
        cls,
        state_dir: Path,
        *,
        users: bool = True,
        cgroups: bool = True,
        allow_shared: bool = False,
        uid_base: int = DEFAULT_UID_BASE,
        uid_count: int = DEFAULT_UID_COUNT,
    ) -> Walls:
        """What this machine allows (see the module's docstring); logged once."""
        tree = None
        if cgroups:
            try:
                tree = CgroupTree.open()
            except OSError as exc:
                logger.info(f"No cgroup v2 group per instance here ({exc}); using subreapers")
        tenants, reason = None, None
        if not users:
            reason = "tenant users are turned off"
        elif os.geteuid() != 0:
            reason = "cattery is not running as root"
        else:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
            probe_uid = uid_base + uid_count - 1
            if probe_uid not in _PROBED:  # the interpreter doesn't change under a process
                _PROBED[probe_uid] = cls(state_dir, tenants=None, tree=None)._try_tenant(probe_uid)
            reason = _PROBED[probe_uid]
            if reason is None:
                tenants = TenantIds(state_dir, uid_base, uid_count - 1)
        walls = cls(state_dir, tenants=tenants, tree=tree, reason=reason, allow_shared=allow_shared)
        logger.info(walls.report.describe())
        if tenants is None:
            logger.warning(
                "Bots of every organization run as cattery's user and can read its state dir; "
                + (
                    "CATTERY_ALLOW_SHARED_TENANCY=1: several organizations may run bots"
                    if allow_shared
                    else "only one organization may run bots (CATTERY_ALLOW_SHARED_TENANCY=1 "
                    "allows more)"
                )
            )
        return walls

    def _try_tenant(self, uid: int) -> str | None:
        """Run the interpreter as ``uid`` in a private view; None if it imports the
        runtime, else why not."""
        probe = Tenant("probe", uid, uid, Path("/nonexistent"))
        launch = self._launch(
            probe,
            [sys.executable, "-c", "import cattery.runtime.main"],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            cwd=Path("/"),
            reveal=[],
            cgroup=None,
        )
        try:
            done = subprocess.run(
                launch.args,
                input=launch.plan,
                env=launch.env,
                cwd=launch.cwd,
                capture_output=True,
                timeout=PROBE_TIMEOUT_SECONDS,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the probe could not run: {exc}"
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
            return "an unprivileged interpreter could not start: " + " ".join(tail)
        return None

    # -- per organization ---------------------------------------------------------------

    def tenant(self, organization: str) -> Tenant | None:
        """The organization's user, or None where instances run as cattery's user (after
        checking that this organization may run bots here)."""
        if self.tenants is not None:
            return self.tenants.tenant(organization)
        if self.allow_shared:
            return None
        if self._shared_by is None:
            self._shared_by = organization
        elif self._shared_by != organization:
            raise SharedTenancyRefused(
                f"Organization {self._shared_by!r} already runs bots here, and this machine "
                "can't give organizations users of their own (cattery is not root): set "
                "CATTERY_ALLOW_SHARED_TENANCY=1 to let them share one"
            )
        return None

    # -- per process --------------------------------------------------------------------

    def launch(
        self,
        tenant: Tenant | None,
        program: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        reveal: Iterable[Path],
        cgroup: Cgroup | None,
    ) -> Launch:
        """How to start ``program`` walled in: through ``enter`` when there is anything
        to enter (a user, a cgroup), else directly."""
        if tenant is None and cgroup is None:
            return Launch(args=list(program), env=dict(env), cwd=str(cwd), plan=None)
        return self._launch(tenant, program, env=env, cwd=cwd, reveal=reveal, cgroup=cgroup)

    def _launch(
        self,
        tenant: Tenant | None,
        program: list[str],
        *,
        env: Mapping[str, str],
        cwd: Path,
        reveal: Iterable[Path],
        cgroup: Cgroup | None,
    ) -> Launch:
        plan = {"env": dict(env), **self.plan(tenant, program, env, cwd, reveal, cgroup)}
        args = [sys.executable, "-I", "-m", ENTER_MODULE, "--plan-fd", "0", "--", *program]
        return Launch(args=args, env={}, cwd="/", plan=json.dumps(plan).encode())

    def plan(
        self,
        tenant: Tenant | None,
        program: list[str],
        env: Mapping[str, str],
        cwd: Path,
        reveal: Iterable[Path],
        cgroup: Cgroup | None,
    ) -> dict[str, object]:
        """What ``enter_walls`` does for ``program`` (its folder, cgroup, user and view of
        the files), without its environment: a plan that holds no secret."""
        plan: dict[str, object] = {
            "cwd": str(cwd),
            "cgroup": str(cgroup.path) if cgroup is not None else None,
        }
        if tenant is not None:
            reveals = self._reveals(tenant, program, env, cwd, reveal)
            plan |= {
                "uid": tenant.uid,
                "gid": tenant.gid,
                "covers": self._covers(tenant, reveals),
                "reveals": sorted(str(r) for r in reveals),
            }
        return plan

    def _reveals(
        self,
        tenant: Tenant,
        program: list[str],
        env: Mapping[str, str],
        cwd: Path,
        extra: Iterable[Path],
    ) -> set[Path]:
        reveals = set(self._import_folders) | interpreter_folders(program[0])
        reveals |= {Path(cwd), tenant.home, *extra}
        for entry in env.get("PYTHONPATH", "").split(os.pathsep):
            if entry:
                reveals.add(Path(entry))
        lease = env.get(LEASE_FILE_ENV)
        if lease:  # a cluster node's lease, alone in its folder: the instance watches it
            reveals.add(Path(lease).parent)
        return {Path(os.path.realpath(r)) for r in reveals if r.exists()}

    def _covers(self, tenant: Tenant, reveals: set[Path]) -> list[str]:
        covers = {self.state_dir}
        for reveal in reveals:
            blocked = blocked_ancestor(reveal, tenant.uid, tenant.gid)
            if blocked is not None:
                covers.add(blocked)
        return sorted(str(c) for c in covers)

    # -- cgroups ------------------------------------------------------------------------

    def cgroup(
        self, name: str, *, memory_bytes: int, cpus: float, within: ParentGroup | None = None
    ) -> Cgroup | None:
        """A new group for an instance, with the limits it can take: in its forking
        parent's subtree (``within``), where it may be born, else on its own."""
        if self.tree is None:
            return None
        group = within.instance(name) if within is not None else self.tree.create(name)
        self._limit(group, memory_bytes=memory_bytes, cpus=cpus)
        return group

    def parent_group(
        self, name: str, tenant: Tenant | None, *, memory_bytes: int, cpus: float
    ) -> ParentGroup | None:
        """A forking parent's subtree (``cgroups.py``), delegated to ``tenant``, with the
        parent's own group limited as an instance's is."""
        if self.tree is None:
            return None
        uid, gid = (tenant.uid, tenant.gid) if tenant is not None else (None, None)
        group = self.tree.parent_group(name, uid, gid)
        self._limit(group.leaf, memory_bytes=memory_bytes, cpus=cpus)
        return group

    def _limit(self, group: Cgroup, *, memory_bytes: int, cpus: float) -> None:
        memory = memory_bytes if self.report.memory == "cgroup2" else None
        cpu = cpus if self.report.cpu == "cgroup2" else None
        try:
            group.limit(memory_bytes=memory, cpus=cpu)
        except OSError as exc:
            logger.warning(f"Could not limit cgroup {group.path}: {exc}")
