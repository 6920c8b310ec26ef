"""The local backend: each instance is a ``cattery runtime`` process on this machine.

An instance is started in its own session (process group) with its output going to a
file, so it outlives a control plane that is killed: running sessions go on, and the next
control plane reattaches them with ``adopt``. ``--parent-pid`` makes an *idle* instance
exit once its owner is gone, so no warm instance is orphaned.

On Linux an instance is, by default, forked from a per-agent parent that has already
imported the bot (``cattery.backends.forking``): the same runtime, the same contract, in
milliseconds instead of the second a fresh interpreter takes to import Pipecat. Agents'
parents are themselves forked from one shared parent per interpreter that has imported
the common stack, so an idle agent costs little more than its bot's own modules, and one
idle for ``parent_idle_seconds`` retires.
``fork=False`` (``CATTERY_BACKEND_FORK=0``) starts every instance as a fresh process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from loguru import logger

from cattery.backends.base import (
    Adoption,
    InstanceFailed,
    InstanceHandle,
    InstanceSpec,
    InstanceStatus,
    LineSink,
    Locator,
    MetricsSink,
)
from cattery.backends.forking.client import ParentLaunch, WallsPlan, fork_supported, spec_key
from cattery.backends.forking.servers import (
    DEFAULT_PARENT_IDLE_SECONDS,
    CgroupMaker,
    Forked,
    ForkServers,
    PlainProcessesSink,
)
from cattery.backends.handles import close_all
from cattery.backends.local.adoption import locator_of, read_last_lines, record_from, replay
from cattery.backends.local.environment import build_env
from cattery.backends.local.forkserver import ForkedProcess
from cattery.backends.local.handle import LocalInstanceHandle
from cattery.backends.local.metrics import MetricsSampler
from cattery.backends.local.proc import AdoptedProcess, ChildProcess, ProcessRef
from cattery.backends.local.record import AdoptRecord
from cattery.backends.profiles import DEFAULT_PROFILE, PROFILES, Limits
from cattery.backends.walls.cgroups import Cgroup, ParentGroup
from cattery.backends.walls.policy import Launch, Walls
from cattery.backends.walls.tenants import Tenant
from cattery.contract import INSTANCE_TOKEN_ENV, MEMORY_LIMIT_ENV
from cattery.files import open_private_append, private_dir

__all__ = ["INSTANCE_TOKEN_ENV", "LocalBackend", "instance_env"]
LISTEN_BACKLOG = 128
#: an instance's log file is kept this long after its last line (its lines are in the store)
DEFAULT_LOG_RETENTION_SECONDS = 24 * 3600.0
PRUNE_INTERVAL_SECONDS = 3600.0
SHARED_PARENT_HOME = "/nonexistent"
_fork_unsupported_logged = False


def new_instance_id() -> str:
    return "inst_" + uuid.uuid4().hex


def bind_loopback(host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on ``host`` (loopback unless a cluster's node says otherwise), on
    a port the kernel picks, for a child to inherit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(LISTEN_BACKLOG)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def instance_env(
    spec: InstanceSpec,
    token: str | None,
    base: Mapping[str, str] | None = None,
    *,
    home: Path | None = None,
    memory_limit: int | None = None,
) -> dict[str, str]:
    """The instance's environment: the allow-listed part of ours (``environment.py``), the
    agent's, then the instance's own (token, home, memory fallback)."""
    extra = {MEMORY_LIMIT_ENV: str(memory_limit)} if memory_limit else {}
    return build_env(
        spec.env, token=token, home=str(home) if home else None, base=base, extra=extra
    )


def organization_of(spec: InstanceSpec) -> str:
    return spec.agent_key.split("/", 1)[0]


def limits_of(spec: InstanceSpec) -> Limits:
    """What the spec's profile (or its deploy's own resources) allows."""
    return spec.limits or PROFILES.get(spec.profile, PROFILES[DEFAULT_PROFILE])


def bot_folder(image: str) -> Path:
    path = Path(image).resolve()
    return path if path.is_dir() else path.parent


def runtime_command(spec: InstanceSpec, fd: int) -> list[str]:
    python = str(spec.python) if spec.python else sys.executable
    return [
        python,
        "-m",
        "cattery.cli",
        "runtime",
        str(Path(spec.image).resolve()),  # the runtime's cwd is the bot's folder
        "--host",
        "127.0.0.1",
        "--fd",
        str(fd),
        "--one-session",
        "--parent-pid",
        str(os.getpid()),
    ]


def _popen(launch: Launch, **kwargs: object) -> subprocess.Popen[bytes]:
    """Start the runtime in a new session, so it survives its owner's death; through
    ``enter`` (its plan on stdin) when it has walls to enter."""
    stdin = subprocess.PIPE if launch.plan is not None else subprocess.DEVNULL
    try:
        popen = subprocess.Popen(  # type: ignore[call-overload]
            launch.args,
            start_new_session=True,
            stdin=stdin,
            env=launch.env,
            cwd=launch.cwd,
            **kwargs,
        )
    except OSError as exc:
        raise InstanceFailed(f"could not start {launch.args[0]}: {exc}") from exc
    if launch.plan is not None:
        assert popen.stdin is not None
        try:
            popen.stdin.write(launch.plan)
            popen.stdin.close()
        except OSError:
            pass  # it died at once: its exit is the handle's to report
    return popen


def _join_soon(cgroup: Cgroup, pid: int) -> asyncio.Future[None]:
    """Move forked child ``pid`` into its cgroup, in a thread: a move may wait some 10 ms
    in the kernel (for an RCU grace period), which neither the control plane's loop nor
    the child's start should wait for. The child starts serving meanwhile; its handle is
    ready only once the move is done, so no session runs before it."""

    def join() -> None:
        with contextlib.suppress(OSError):
            cgroup.add(pid)

    return asyncio.ensure_future(asyncio.to_thread(join))


def forking_enabled(requested: bool) -> bool:
    """Whether instances are forked: asked for, and possible here (logged once if not)."""
    global _fork_unsupported_logged
    if requested and not fork_supported():
        if not _fork_unsupported_logged:
            _fork_unsupported_logged = True
            logger.info(f"Forking instances is not supported on {sys.platform}; using processes")
        return False
    return requested


def parent_launch(
    spec: InstanceSpec,
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    walls: WallsPlan | None = None,
) -> ParentLaunch:
    """How to form the forking parent of ``spec``: an instance's interpreter, bot and
    environment, without an instance's token (each child gets its own)."""
    return ParentLaunch(
        python=str(spec.python) if spec.python else sys.executable,
        bot=str(Path(spec.image).resolve()),
        cwd=bot_folder(spec.image),
        env=dict(env) if env is not None else instance_env(spec, None),
        log_path=log_path,
        walls=walls,
    )


class LocalBackend:
    """Makes instances as processes; owns each handle until it is closed or detached.

    ``state_dir/instances/<instance_id>.log`` holds each instance's output, and
    ``state_dir/instances/parent-<agent>-<key>.log`` each forking parent's.
    """

    def __init__(
        self,
        state_dir: Path,
        line_sink: LineSink,
        metrics_sink: MetricsSink,
        sample_interval: float = 2.0,
        fork: bool = True,
        log_retention: float = DEFAULT_LOG_RETENTION_SECONDS,
        walls: Walls | None = None,
        parent_idle_seconds: float = DEFAULT_PARENT_IDLE_SECONDS,
        host: str = "127.0.0.1",
    ) -> None:
        self.state_dir = Path(state_dir)
        #: the address instances listen on: loopback, or a cluster node's own address
        self.host = host
        #: what walls instances in; None: they run as we do, with no limits
        self.walls = walls
        self.instances_dir = self.state_dir / "instances"
        self._log_retention = log_retention
        self._last_prune: float | None = None
        self._line_sink = line_sink
        self._metrics = MetricsSampler(metrics_sink, sample_interval)
        self._handles: dict[str, LocalInstanceHandle] = {}
        self._closed = False
        self._forks: ForkServers | None = None
        if forking_enabled(fork):
            self._forks = ForkServers(
                self.instances_dir,
                # nobody's secrets, and no home: what a library makes in $HOME at import
                # would be root's, open in every agent's parent
                build_env({}, token=None, home=SHARED_PARENT_HOME),
                idle_seconds=parent_idle_seconds,
            )

    @property
    def forking(self) -> bool:
        """Whether this backend forks its instances from pre-imported parents."""
        return self._forks is not None

    def watch_plain_processes(self, sink: PlainProcessesSink) -> None:
        """Have ``sink`` told, once per spec, when that spec's instances fall back from
        forks to plain processes, and why (a bot that starts threads at import, ...)."""
        if self._forks is not None:
            self._forks.on_plain_processes = sink

    @property
    def fork_servers(self) -> ForkServers | None:
        return self._forks

    @property
    def handles(self) -> list[LocalInstanceHandle]:
        """The handles this backend still owns (not yet closed or detached)."""
        return list(self._handles.values())

    async def start(self) -> None:
        private_dir(self.instances_dir)

    def prune_logs(self) -> int:
        """Delete the log files of instances this backend doesn't own that nothing has
        written to for ``log_retention`` seconds (their lines are in the store by then).
        Called at most once an hour, from ``spawn``; returns how many went."""
        self._last_prune = time.monotonic()
        cutoff = time.time() - self._log_retention
        owned = {f"{instance_id}.log" for instance_id in self._handles}
        removed = 0
        for path in self.instances_dir.glob("inst_*.log"):
            try:
                if path.name not in owned and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            logger.info(f"Removed {removed} instance log file(s) older than the retention")
        return removed

    def _prune_due(self) -> bool:
        last = self._last_prune
        return last is None or time.monotonic() - last >= PRUNE_INTERVAL_SECONDS

    async def spawn(self, spec: InstanceSpec) -> LocalInstanceHandle:
        """Start a runtime for ``spec`` on a port bound here; return at once (STARTING)."""
        if self._closed:
            raise RuntimeError("the local backend is closed")
        await self.start()
        if self._prune_due():
            await asyncio.to_thread(self.prune_logs)
        instance_id = new_instance_id()
        token = secrets.token_urlsafe(32)
        log_path = self.instances_dir / f"{instance_id}.log"
        tenant = self._tenant(spec)
        env = self._env(spec, tenant, token)
        sock = bind_loopback(self.host)
        cgroup: Cgroup | None = None
        joining: asyncio.Future[None] | None = None
        ready_fd: int | None = None
        on_ready: Callable[[], None] | None = None
        try:
            port = sock.getsockname()[1]
            with open_private_append(log_path) as log:
                process: ProcessRef | None = None
                if self._forks is not None:
                    ready_fd, ready_w = os.pipe()
                    try:
                        forked = await self._fork(
                            spec, tenant, env, sock, log.fileno(), instance_id, ready_w
                        )
                    finally:
                        os.close(ready_w)  # the child's copy is the only one left
                    if forked is not None:
                        process = ForkedProcess(forked.pid, forked.server)
                        cgroup, on_ready = forked.cgroup, forked.replenish
                        if cgroup is not None and not forked.born_inside:
                            joining = _join_soon(cgroup, process.pid)
                    else:
                        os.close(ready_fd)
                        ready_fd = None
                if process is None:
                    cgroup = self._cgroup(instance_id, spec)
                    launch = self._launch(
                        tenant, runtime_command(spec, sock.fileno()), env, spec, cgroup
                    )
                    popen = _popen(
                        launch, pass_fds=[sock.fileno()], stdout=log, stderr=subprocess.STDOUT
                    )
                    process = ChildProcess(popen)
        except BaseException:
            if ready_fd is not None:
                os.close(ready_fd)
            if cgroup is not None:
                await asyncio.to_thread(cgroup.kill_and_remove)
            raise
        finally:
            sock.close()  # the child holds its own copy
        handle = self._own(
            instance_id=instance_id,
            spec=spec,
            process=process,
            port=port,
            host=self.host,
            token=token,
            log_path=log_path,
            log_offset=0,
            status=InstanceStatus.STARTING,
            cgroup=cgroup,
            memory_bytes=limits_of(spec).memory_bytes,
            joining=joining,
            ready_fd=ready_fd,
            on_ready=on_ready,
        )
        logger.bind(**handle.log_context()).info(f"Started instance on port {port}")
        return handle

    # -- walls --------------------------------------------------------------------------

    def _tenant(self, spec: InstanceSpec) -> Tenant | None:
        """The user ``spec``'s instances run as (None: ours); refuses an organization
        that may not run bots here."""
        return self.walls.tenant(organization_of(spec)) if self.walls is not None else None

    def _env(self, spec: InstanceSpec, tenant: Tenant | None, token: str | None) -> dict:
        memory = None
        if self.walls is not None and self.walls.report.memory == "rlimit_as":
            memory = limits_of(spec).memory_bytes
        home = tenant.home if tenant is not None else None
        return instance_env(spec, token, home=home, memory_limit=memory)

    def _cgroup(
        self, name: str, spec: InstanceSpec, within: ParentGroup | None = None
    ) -> Cgroup | None:
        if self.walls is None:
            return None
        limits = limits_of(spec)
        return self.walls.cgroup(
            name, memory_bytes=limits.memory_bytes, cpus=limits.cpus, within=within
        )

    def _launch(
        self,
        tenant: Tenant | None,
        program: list[str],
        env: Mapping[str, str],
        spec: InstanceSpec,
        cgroup: Cgroup | None,
    ) -> Launch:
        folder = bot_folder(spec.image)
        if self.walls is None:
            return Launch(args=program, env=dict(env), cwd=str(folder), plan=None)
        return self.walls.launch(
            tenant, program, env=env, cwd=folder, reveal=[folder], cgroup=cgroup
        )

    async def prepare(self, spec: InstanceSpec) -> None:
        """Load the forking parent of ``spec`` ahead of its first instance (at deploy time),
        so even that one is a fork: with ``minAgents`` 0 it would otherwise wait seconds
        for the parent to import its bot. Nothing to do for plain processes."""
        if self._forks is None or self._closed:
            return
        await self.start()
        launch = self._parent_launch(spec, self._tenant(spec))
        await self._forks.prepare(spec, launch)

    async def retire(self, agent_key: str) -> None:
        """The agent is gone: its forking parent stops now, not when it would retire."""
        if self._forks is not None:
            await self._forks.retire(agent_key)

    async def _fork(
        self,
        spec: InstanceSpec,
        tenant: Tenant | None,
        env: dict[str, str],
        sock: socket.socket,
        log_fd: int,
        instance_id: str,
        ready_fd: int,
    ) -> Forked | None:
        """A child of the agent's forking parent, born in its own cgroup in the parent's
        subtree where it can be; None to start a plain process."""
        assert self._forks is not None
        launch = self._parent_launch(spec, tenant)
        return await self._forks.fork(
            spec,
            launch,
            env,
            sock,
            log_fd,
            ready_fd=ready_fd,
            make_cgroup=self._cgroup_maker(spec),
            name=instance_id,
        )

    def _cgroup_maker(self, spec: InstanceSpec) -> CgroupMaker:
        """Makes the cgroup of one of ``spec``'s forked instances (or of its parent's
        spare child), by name, in the parent's subtree."""
        return lambda group, name: self._cgroup(name, spec, group)

    def _parent_launch(self, spec: InstanceSpec, tenant: Tenant | None = None) -> ParentLaunch:
        """The agent's forking parent: walled in as its instances are (the parent imports
        the bot, so it runs as the organization's user before it does)."""
        key = spec_key(spec)
        name = f"parent-{spec.agent_key.replace('/', '-')}-{key}"
        env = self._env(spec, tenant, None)

        def walls() -> tuple[dict[str, object], ParentGroup | None]:
            folder = bot_folder(spec.image)
            if self.walls is None:
                return {"cwd": str(folder)}, None
            # each parent formed gets a subtree of its own: a retiring one empties only
            # its own group, and its instances' groups go with the last of them
            limits = limits_of(spec)
            group = self.walls.parent_group(
                f"{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
                tenant,
                memory_bytes=limits.memory_bytes,
                cpus=limits.cpus,
            )
            program = [str(spec.python) if spec.python else sys.executable]
            leaf = group.leaf if group is not None else None
            plan = self.walls.plan(tenant, program, env, folder, [folder], leaf)
            return plan, group

        return parent_launch(spec, self.instances_dir / f"{name}.log", env=env, walls=walls)

    # -- adoption (``Adopting``): instances outlive a control plane that is killed --------

    def locate(self, handle: InstanceHandle) -> Locator | None:
        if not isinstance(handle, LocalInstanceHandle):
            return None
        return locator_of(handle)

    async def adopt(self, instance_id: str, spec: InstanceSpec, locator: Locator) -> Adoption:
        record = record_from(instance_id, spec, locator)
        handle = await self.adopt_record(record) if record is not None else None
        if handle is not None or not locator.log:
            return Adoption(handle)
        return Adoption(
            None, replay(instance_id, Path(locator.log), locator.log_offset, self._line_sink)
        )

    async def last_lines(self, instance_id: str) -> tuple[str, ...]:
        if not instance_id or "/" in instance_id:
            return ()
        return read_last_lines(self.instances_dir / f"{instance_id}.log")

    async def adopt_record(self, record: AdoptRecord) -> LocalInstanceHandle | None:
        """Reattach an instance an earlier control plane started; None if it is gone."""
        if self._closed:
            raise RuntimeError("the local backend is closed")
        if record.instance_id in self._handles:
            return self._handles[record.instance_id]
        process = AdoptedProcess.find(record.pid, record.create_time)
        if process is None:
            logger.info(f"Instance {record.instance_id} (pid {record.pid}) is gone; not adopted")
            return None
        handle = self._own(
            instance_id=record.instance_id,
            spec=record.spec,
            process=process,
            port=record.port,
            token=record.token,
            log_path=record.log_path,
            log_offset=record.log_offset,
            status=InstanceStatus.READY,
            cgroup=Cgroup(Path(record.cgroup)) if record.cgroup else None,
            memory_bytes=limits_of(record.spec).memory_bytes,
        )
        logger.bind(**handle.log_context()).info("Adopted instance")
        return handle

    def _own(self, *, process: ProcessRef, **kwargs: object) -> LocalInstanceHandle:
        handle = LocalInstanceHandle(
            line_sink=self._line_sink,
            process=process,
            on_closed=self._forget,
            **kwargs,  # type: ignore[arg-type]
        )
        self._handles[handle.id] = handle
        self._metrics.add(handle.id, process)
        return handle

    def _forget(self, handle: LocalInstanceHandle) -> None:
        self._handles.pop(handle.id, None)
        self._metrics.remove(handle.id)

    async def aclose(self) -> None:
        """Close every instance this backend still owns, then its forking parents.
        Idempotent."""
        self._closed = True
        await close_all(self.handles)
        await self._metrics.aclose()
        if self._forks is not None:
            await self._forks.aclose()
