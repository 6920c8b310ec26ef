"""What a forked child does before it serves: become an instance of its own, then serve.

The child leaves its parent behind (``detach.py``: its own session, default signal
handling, none of the parent's descriptors, stdout/stderr to its log file), takes the
instance's environment (``instance_environ``: what a fresh process
would have once the bot is imported), re-seeds its random generators and enables the
garbage collector. Then it serves the runtime contract on the inherited socket, as
``cattery runtime --fd --one-session`` would, writes one byte to its readiness pipe once
it serves (the backend's handle waits for that, not for an HTTP probe), and exits with
``os._exit`` so nothing of the parent's loop runs.

One limit: ``bot.py`` was imported in the parent, so a value a bot reads at import time is
the parent's (the agent's environment, without the instance's token); anything read when
``bot()`` runs is the instance's own.
"""

from __future__ import annotations

import gc
import os
import random
import socket
import sys
from collections.abc import Mapping
from typing import NoReturn

from cattery.backends.forking import wire
from cattery.backends.forking.detach import (
    detach,
    flush_and_exit,
    leave_parent,
    run_then_exit,
    write_to,
)


def instance_environ(
    launched: Mapping[str, str], imported: Mapping[str, str], given: Mapping[str, str]
) -> dict[str, str]:
    """A child's environment, as a fresh process would have it after importing the bot.

    ``launched`` is what the parent started with (the deployment's environment),
    ``imported`` the parent's environment after the bot's import (what ``load_dotenv``, or
    any other import-time write, made of it), and ``given`` the instance's own. The child
    gets ``imported`` with the instance's own values on top: those ``given`` sets
    differently from ``launched`` (its token, ...), and the removal of those it lacks.
    Every child starts from the parent's, so nothing one child sets reaches another.
    """
    env = dict(imported)
    for key, value in given.items():
        if launched.get(key) != value:
            env[key] = value
    for key in launched.keys() - given.keys():
        env.pop(key, None)
    return env


def run_child(
    loaded: object,
    *,
    listen_fd: int,
    log_fd: int,
    started_fd: int,
    ready_fd: int | None,
    env: Mapping[str, str],
    one_session: bool,
    owner_fd: int,
    parent_fds: list[int],
) -> NoReturn:
    """Serve one instance in this freshly forked process; never returns."""

    def work() -> None:
        become_instance(log_fd=log_fd, started_fd=started_fd, env=env, parent_fds=parent_fds)
        _serve(loaded, listen_fd, one_session, owner_fd, ready_fd)

    run_then_exit(work)


def run_spare(
    loaded: object, *, sock_fd: int, started_fd: int, owner_fd: int, parent_fds: list[int]
) -> NoReturn:
    """Wait, as a spare child, for the instance it is to become: its environment and
    descriptors (listening socket, log, readiness pipe) come on ``sock_fd`` from the
    parent, then it serves as ``run_child``'s child would. Meanwhile it rehearses its
    start (``runtime/rehearsal.py``). End of file there (the parent
    dropped it, or is gone): exit 0, having served nothing. Never returns."""

    def work() -> None:
        leave_parent(started_fd=started_fd, parent_fds=parent_fds)
        _rehearse(loaded, sock_fd)
        with socket.socket(fileno=sock_fd) as sock:
            data, fds, _, _ = socket.recv_fds(sock, wire.MAX_PACKET, wire.MAX_FDS)
        if not data:
            flush_and_exit(0)
        request = wire.decode(data)
        ready_fd = fds[2] if request.get("ready") else None
        write_to(fds[1])
        become_instance_env(request.get("env") or {})
        _serve(loaded, fds[0], bool(request.get("one_session", True)), owner_fd, ready_fd)

    run_then_exit(work)


def _rehearse(loaded: object, handover_fd: int) -> None:
    from cattery.runtime.main import Prebuilt
    from cattery.runtime.rehearsal import dress_rehearsal

    if isinstance(loaded, Prebuilt):
        dress_rehearsal(loaded.served, handover_fd)
        os.set_blocking(handover_fd, True)  # as it was: the hand-over is awaited blocking


def _serve(
    loaded: object, listen_fd: int, one_session: bool, owner_fd: int, ready_fd: int | None
) -> None:
    from cattery.runtime.main import serve_forked

    serve_forked(
        loaded,  # type: ignore[arg-type]
        fd=listen_fd,
        one_session=one_session,
        owner_fd=owner_fd,
        ready_fd=ready_fd,
    )


def become_instance(
    *, log_fd: int, started_fd: int, env: Mapping[str, str], parent_fds: list[int]
) -> None:
    detach(log_fd=log_fd, started_fd=started_fd, parent_fds=parent_fds)
    become_instance_env(env)


def become_instance_env(env: Mapping[str, str]) -> None:
    """The instance's environment, fresh random state and a collector that runs."""
    os.environ.clear()
    os.environ.update(env)
    reseed()
    gc.enable()


def reseed() -> None:
    """Fresh random state: the parent's would repeat in every child."""
    random.seed()
    # Only a generator the parent imported has state to renew: ``numpy.random`` is imported
    # lazily, on first use (~10 ms), and a child that imports it later seeds it afresh.
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass
