"""``cattery serve``: settings, logging, then uvicorn on the control plane's app."""

from __future__ import annotations

import gc
import resource
import socket
import sys
from pathlib import Path

import uvicorn
from loguru import logger

from cattery.control.listen import bind
from cattery.settings import Settings


def run_control_plane(
    *,
    host: str | None,
    port: int | None,
    fd: int | None,
    agents: list[str] | None = None,
    ray: str | None = None,
) -> None:
    overrides: dict[str, object] = {
        k: v for k, v in {"host": host, "port": port}.items() if v is not None
    }
    settings = Settings(**overrides)
    if ray:
        settings.ray.address = ray
    for item in agents or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"cattery serve: error: --agent takes NAME=PATH, not {item!r}")
        settings.agents[name] = str(Path(path).expanduser().resolve())
    serve(settings, fd=fd)


class ControlServer(uvicorn.Server):
    """uvicorn's server, which puts what start-up built out of the garbage collector's
    sight once it serves."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        freeze_long_lived()


def freeze_long_lived() -> None:
    """What exists once the control plane serves (its modules, app and lifespan state) lives
    as long as the process: frozen, a full collection no longer walks it. One took a few
    hundred milliseconds here with FastAPI, SQLAlchemy and pydantic loaded, and stalled
    whatever start it fell on; only what is made afterwards is walked now."""
    gc.collect()
    gc.freeze()


#: the soft limit asked for when the hard one is unlimited
MAX_OPEN_FILES = 1 << 20


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard one; the new soft limit.

    Every instance holds descriptors here (its log, the connection kept for its session,
    its pidfd), so the usual soft limit of 1024 would cap how many instances one control
    plane can run well before its machine does.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft  # a hard limit above the kernel's nr_open: keep what we have
        return wanted
    return soft


def serve(settings: Settings, *, fd: int | None, sock: socket.socket | None = None) -> None:
    """uvicorn on the control plane's app, until interrupted. The port is bound first
    (unless ``sock`` is): a taken one ends this before anything is created or printed."""
    if sock is None and fd is not None:
        # An inherited socket is opened as TCP here (uvicorn's --fd assumes a unix socket,
        # which leaves Nagle's algorithm on and delays small responses by a delayed ACK).
        sock = socket.socket(fileno=fd)
    elif sock is None:
        sock = bind(settings.host, settings.port, "cattery serve")
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    raise_open_files_limit()
    from cattery.control.app import create_app
    from cattery.control.http import CoalescingHttpProtocol

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=CoalescingHttpProtocol,
        log_level="info",
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.http.keep_alive_timeout,  # type: ignore[arg-type]
        limit_concurrency=settings.http.max_connections,
    )
    config.header_timeout = settings.http.header_timeout  # type: ignore[attr-defined]
    ControlServer(config).run(sockets=[sock])
