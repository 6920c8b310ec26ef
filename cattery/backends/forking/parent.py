"""An agent's forking parent: import the bot once, then fork one instance per request.

The local backend has the agent's shared parent (``shared.py``: the interpreter's common
stack imported once) fork it, walled in as the agent's instances are; it then reads its bot
and environment from its control socket (``serve_formed``). For tests it also runs on its
own as ``python -m cattery.backends.forking.parent BOT --control-fd N --lifeline-fd M`` in
the bot's folder, with the agent's environment. Either way it

1. runs the runtime's ``prepare`` (``bot.py`` imported, and whatever of Pipecat and
   ``pipecatcloud`` the shared parent has not; a bot that can't load exits 2 here, as
   ``cattery runtime`` would) and imports what a serving instance needs next (the app,
   uvicorn's protocols), so a child starts with all of it;
2. remembers what importing the bot did to its environment (``load_dotenv`` of the
   folder's ``.env``, say), so each child starts as a fresh process would: the
   deployment's environment, then the import's changes, then the instance's own values;
3. refuses to fork if importing started a Python thread (a forked child would hold only
   the calling thread; the backend then uses plain processes for this agent);
4. disables the garbage collector and freezes every object before forking, so the
   children's collections never write to the pages they share with it;
5. serves fork requests (``wire.py``) until the backend's end of the control socket closes,
   reaping children on ``SIGCHLD`` and reporting each exit code. A request that carries
   the instance's cgroup has its child born there (``clone.py``), where the kernel allows
   it and this process has a single native thread; else it is an ordinary fork, and the
   reply says the backend must move the child itself. On request it forks a *spare*
   child ahead (in a group of its own), which waits for the next fork request that asks
   for it and then becomes that instance at once: no fork is on that start's path.

It has no threads and no event loop. Its children live in their own sessions: killing the
parent never touches them (``child.py``).
"""

from __future__ import annotations

import argparse
import errno
import gc
import importlib
import os
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable

from cattery.backends.forking import wire
from cattery.backends.forking.child import instance_environ
from cattery.backends.forking.clone import fork_into_cgroup

#: modules a serving child would import on its first steps; loaded here once for all
SERVING_MODULES = (
    "asyncio",
    "concurrent.futures.thread",
    "cattery.runtime.app",
    "cattery.runtime.features",
    "cattery.runtime.observers",
    "pipecat.observers.startup_timing_observer",
    "pipecat.observers.user_bot_latency_observer",
    "cattery.runtime.server",
    "fastapi.telemetry._runtime",
    "pydantic.dataclasses",
    "pydantic.v1",  # FastAPI checks every route's models against it
    "uvicorn.lifespan.on",
    "uvicorn.loops.auto",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.auto",
    "uvicorn.protocols.websockets.websockets_sansio_impl",
)
EXIT_THREADS = 3
EXIT_BAD_REQUEST = 4
#: what says this kernel (or its seccomp filter) will never clone into a cgroup
CLONE_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.EPERM)
_preloaded = False


def native_threads() -> int:
    """Threads of this process as the kernel counts them (Python's and native ones)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


class ForkingParent:
    """Owns the control socket, the ``SIGCHLD`` wake-up pipe and every child it forked
    until that child is reaped. Owned by the process that runs ``main``."""

    #: the request this process serves
    OP = "fork"

    def __init__(
        self,
        loaded: object,
        control: socket.socket,
        lifeline_fd: int,
        launched_env: dict[str, str] | None = None,
    ) -> None:
        self.loaded = loaded
        #: the environment this process started with, before the bot's import touched it
        self.launched_env = dict(os.environ) if launched_env is None else launched_env
        self.control = control
        self.lifeline_fd = lifeline_fd
        self.children: set[int] = set()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        #: why children are not cloned into their cgroups (None: they are, when asked)
        self.no_clone: str | None = None
        #: a child forked ahead, waiting for its instance: (pid, our end of its socket,
        #: whether it was born in the cgroup it was asked for)
        self.spare: tuple[int, socket.socket, bool] | None = None

    def run(self) -> None:
        signal.signal(signal.SIGCHLD, _ignore)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        threads = native_threads()
        if threads > 1:  # a library's threads: its pthread_atfork handlers must run
            self.no_clone = f"{threads} native threads"
        self._send({"event": "ready", "pid": os.getpid(), "native_threads": threads})
        while True:
            readable, _, _ = select.select([self.control, self._wake_r], [], [])
            if self._wake_r in readable:
                os.read(self._wake_r, 4096)
                self.reap()
            if self.control in readable and not self._serve_one():
                break
        self.reap()

    def _serve_one(self) -> bool:
        """Handle one packet; False once the backend is gone (end of file)."""
        try:
            data, fds, _, _ = socket.recv_fds(self.control, wire.MAX_PACKET, wire.MAX_FDS)
        except ConnectionError:
            return False
        if not data:
            _close_all(fds)
            return False
        try:
            request = wire.decode(data)
        except ValueError as exc:
            _close_all(fds)
            self._send({"error": f"bad request: {exc}"})
            return True
        reply: dict[str, object] = {"id": request.get("id")}
        serve = self.fork if request.get("op") == self.OP else self.spares.get(request.get("op"))
        if serve is None or len(fds) != wire.expected_fds(request):
            reply["error"] = f"expected a {self.OP} request with the descriptors it names"
            _close_all(fds)
        else:
            try:
                reply.update(serve(request, fds))
            except OSError as exc:
                reply["error"] = f"fork failed: {exc}"
            finally:
                _close_all(fds)
        self._send(reply)
        return True

    @property
    def spares(self) -> dict[object, Callable[[dict, list[int]], dict[str, object]]]:
        """Requests besides ``OP`` this parent serves."""
        return {wire.SPARE_OP: self.make_spare}

    def fork(self, request: dict, fds: list[int]) -> dict[str, object]:
        """Fork the child ``request`` asks for: ``{"pid": P, "cgroup": born there}``,
        once it leads its own session (``detach``). A request for the spare child is
        served by handing it the request, when there is one still waiting."""
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()  # whatever this loop allocated since the last fork joins the shared set
        env = instance_environ(self.launched_env, os.environ, request.get("env") or {})
        if request.get("spare"):
            handed = self._hand_to_spare(request, env, fds)
            if handed is not None:
                return handed
        named = [name for name in wire.OPTIONAL_FDS if request.get(name)]
        extra = dict(zip(named, fds[wire.FORK_FDS :], strict=True))
        cgroup_fd = extra.get("cgroup")
        started_r, started_w = os.pipe()
        try:
            pid, inside = self._fork_into(cgroup_fd)
        except OSError:
            _close_all([started_r, started_w])
            raise
        if pid == 0:
            from cattery.backends.forking.child import run_child

            own = [self.control.fileno(), self._wake_r, self._wake_w, started_r]
            run_child(
                self.loaded,
                listen_fd=fds[0],
                log_fd=fds[1],
                started_fd=started_w,
                ready_fd=extra.get("ready"),
                env=env,
                one_session=bool(request.get("one_session", True)),
                owner_fd=self.lifeline_fd,
                parent_fds=own if cgroup_fd is None else [*own, cgroup_fd],
            )
        self.children.add(pid)
        wait_started(started_r, started_w)
        return {"pid": pid, "cgroup": inside}

    def make_spare(self, request: dict, fds: list[int]) -> dict[str, object]:
        """Fork a spare child (born in the cgroup ``fds`` names, if any) that waits for
        the next request for it; an older spare is dropped (it exits)."""
        self._drop_spare()
        sys.stdout.flush()
        sys.stderr.flush()
        gc.freeze()
        cgroup_fd = fds[0] if request.get("cgroup") else None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        started_r, started_w = os.pipe()
        try:
            pid, inside = self._fork_into(cgroup_fd)
        except OSError:
            _close_all([started_r, started_w])
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            from cattery.backends.forking.child import run_spare

            own = [self.control.fileno(), self._wake_r, self._wake_w, started_r, ours.fileno()]
            run_spare(
                self.loaded,
                sock_fd=theirs.fileno(),
                started_fd=started_w,
                owner_fd=self.lifeline_fd,
                parent_fds=own if cgroup_fd is None else [*own, cgroup_fd],
            )
        theirs.close()
        self.children.add(pid)
        wait_started(started_r, started_w)
        self.spare = (pid, ours, inside)
        return {"pid": pid, "cgroup": inside}

    def _hand_to_spare(
        self, request: dict, env: dict[str, str], fds: list[int]
    ) -> dict[str, object] | None:
        """Give the spare its instance: the answer, or None when there is no spare (or
        it died) and a child must be forked now."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        pid, sock, inside = spare
        message = {"env": env, "one_session": request.get("one_session", True)}
        if request.get("ready"):
            message["ready"] = True
        try:
            socket.send_fds(sock, [wire.encode(message)], fds[: wire.expected_fds(request)])
        except OSError:
            return None  # it is gone: reaped as any child
        finally:
            sock.close()
        return {"pid": pid, "cgroup": inside}

    def _drop_spare(self) -> None:
        if self.spare is not None:
            self.spare[1].close()  # end of file: it exits
            self.spare = None

    def _fork_into(self, cgroup_fd: int | None) -> tuple[int, bool]:
        """Fork, into the cgroup ``cgroup_fd`` names when that is possible here;
        ``(pid, whether the child was born there)``."""
        if cgroup_fd is not None and self.no_clone is None:
            try:
                return fork_into_cgroup(cgroup_fd), True
            except OSError as exc:
                if exc.errno in CLONE_UNSUPPORTED:
                    self.no_clone = str(exc)
                print(
                    f"cattery forking parent: forking without a cgroup to be born in: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
        return os.fork(), False

    def reap(self) -> None:
        """Collect every child that has exited and report its exit code."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self._send({"event": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict) -> None:
        try:
            self.control.send(wire.encode(message))
        except OSError:
            pass  # the backend is gone; the loop notices the end of file


def _ignore(signum: int, frame: object) -> None:
    """A Python handler, so the wake-up pipe is written on ``SIGCHLD``."""


def wait_started(started_r: int, started_w: int) -> None:
    """Wait for a child's word that it leads its own session (or for its death)."""
    os.close(started_w)
    try:
        os.read(started_r, 1)
    finally:
        os.close(started_r)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def preload_serving_modules() -> None:
    """Import what serving needs, and build a throwaway route once, so the lazy set-up
    FastAPI and pydantic do on a first route (plugin discovery, schema machinery) is done
    here, once, instead of in every child. Done once per process: an agent parent formed
    by the shared parent finds it done already."""
    global _preloaded
    if _preloaded:
        return
    for name in SERVING_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # an optional speed-up (uvloop, httptools); the child imports what it needs
    from fastapi import FastAPI, Header

    warm = FastAPI()  # not the bot's app: the child builds that one

    @warm.post("/warm")
    async def route(x_warm: str | None = Header(None)) -> dict[str, str]:
        return {}

    _preloaded = True


def send_refusal(control: socket.socket, reason: str) -> None:
    """Tell the backend why this bot can't be forked (it runs plain processes instead)."""
    try:
        control.send(wire.encode({"event": "refused", "reason": reason}))
    except OSError:
        pass


def load_and_serve(
    path: str, control: socket.socket, lifeline_fd: int, launched_env: dict[str, str]
) -> None:
    """Import the bot (steps 1 to 4), then serve fork requests until the backend is gone."""
    from cattery.runtime.main import prebuild, prepare
    from cattery.runtime.options import RuntimeOptions

    loaded = prepare(path, RuntimeOptions.from_env(host="127.0.0.1"))
    preload_serving_modules()
    # built once here, with the settings a child reads (the bot's import may have set
    # some): each child only takes its own token and serves
    prepared = prebuild(loaded, RuntimeOptions.from_env(host="127.0.0.1"))
    if threading.active_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        reason = f"importing the bot started threads ({', '.join(names)}), which a fork would lose"
        print(f"cattery forking parent: {reason}", file=sys.stderr)
        send_refusal(control, reason)
        raise SystemExit(EXIT_THREADS)
    gc.freeze()
    ForkingParent(prepared, control, lifeline_fd, launched_env).run()


def serve_formed(control: socket.socket, lifeline_fd: int) -> None:
    """An agent parent formed by the shared parent, already in its walls: its bot and its
    environment come first on its control socket, straight from the backend (so the
    shared parent never holds an agent's secrets). Then as a parent started on its own."""
    data = control.recv(wire.MAX_PACKET)
    if not data:
        raise SystemExit(0)  # the backend is gone before it said what to load
    request = wire.decode(data)
    if request.get("op") != "load" or not isinstance(request.get("env"), dict):
        print("cattery forking parent: expected a load request first", file=sys.stderr)
        raise SystemExit(EXIT_BAD_REQUEST)
    os.environ.clear()
    os.environ.update(request["env"])
    load_and_serve(str(request["bot"]), control, lifeline_fd, dict(os.environ))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cattery-forking-parent")
    parser.add_argument("path")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    args = parser.parse_args(argv)
    gc.disable()  # no holes in pages the children will share; children enable it again
    control = socket.socket(fileno=args.control_fd)
    load_and_serve(args.path, control, args.lifeline_fd, dict(os.environ))


if __name__ == "__main__":
    main()
