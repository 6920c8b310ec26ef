"""A pooled instance rehearses its session's request once, while it waits for it.

An instance forked from its agent's parent shares the parent's memory until it writes to
it, and the first ``POST /bot`` it serves writes to a great many shared pages: every
object on the path (the event loop's, the HTTP parser's, the server's and our own) has its
reference count changed. Each first write is a page fault and a page copy, costly on a
virtual machine; an idle instance's first request took about 1 ms longer than its second.
So an instance that waits in a pool sends itself one request, shaped as the control
plane's and refused by the instance token (a 401 nobody logs), reads a session's request
as ``POST /bot`` would (what the refusal left out), and takes those faults then.

An instance a start is already waiting for skips it: its session has begun by the time the
rehearsal would run, and the faults are the session's either way. So does an instance that
was a spare child: a spare rehearses its whole start while it waits (``dress_rehearsal``),
this request included.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from loguru import logger

from cattery.contract import MAX_SESSION_HEADER, SESSION_ID_HEADER
from cattery.runtime.botroute import rehearse_reading
from cattery.runtime.options import INSTANCE_TOKEN_HEADER, RuntimeOptions
from cattery.runtime.sessions import SessionRunner

if TYPE_CHECKING:
    from cattery.runtime.app import ServedApp
    from cattery.runtime.server import DrainingServer

#: how long a ready instance waits before it rehearses: a start that was waiting for the
#: instance has reached it by then (and the rehearsal is skipped)
REHEARSE_AFTER_SECONDS = 0.003
REHEARSAL_TIMEOUT_SECONDS = 5.0
#: whether this process rehearsed already (a spare child, before it was handed out)
_rehearsed = False
_BODY = b'{"rehearsal": true}'


def _request() -> bytes:
    """``POST /bot`` as the control plane sends it, with a token that is surely not the
    instance's (a fresh random one): refused before its body is read."""
    head = {
        "Host": "rehearsal",
        "Connection": "close",
        "Content-Type": "application/json",
        "Content-Length": str(len(_BODY)),
        INSTANCE_TOKEN_HEADER: secrets.token_urlsafe(32),
        SESSION_ID_HEADER: "rehearsal",
        MAX_SESSION_HEADER: "60",
    }
    lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
    return f"POST /bot HTTP/1.1\r\n{lines}\r\n".encode() + _BODY


def loopback_address(sock: socket.socket) -> tuple[int, object]:
    """Where to reach a listening socket from this host: its family and address."""
    name = sock.getsockname()
    if sock.family == socket.AF_INET:
        host = "127.0.0.1" if name[0] in ("0.0.0.0", "") else name[0]
        return sock.family, (host, name[1])
    if sock.family == socket.AF_INET6:
        host = "::1" if name[0] in ("::", "") else name[0]
        return sock.family, (host, name[1])
    return sock.family, name


async def rehearse(listening: socket.socket, runner: SessionRunner) -> None:
    """Send ``POST /bot`` to ourselves once, unless a session or a drain came first."""
    await asyncio.sleep(REHEARSE_AFTER_SECONDS)
    if runner.active or runner.draining or _rehearsed:
        return
    family, address = loopback_address(listening)
    try:
        async with asyncio.timeout(REHEARSAL_TIMEOUT_SECONDS):
            if family == socket.AF_UNIX:
                reader, writer = await asyncio.open_unix_connection(address)  # type: ignore[arg-type]
            else:
                host, port = address  # type: ignore[misc]
                reader, writer = await asyncio.open_connection(host, port, family=family)
            try:
                writer.write(_request())
                await reader.read()  # the refusal, then the server closes
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        logger.debug(f"The instance's rehearsal request failed: {exc!r}")
    rehearse_reading()  # what the refusal left out: reading a session's request


def dress_rehearsal(served: ServedApp, handover_fd: int) -> None:
    """A spare child's rehearsal of its whole start while it waits to be handed out: a
    server for its app on a port of its own, the request above, shut down. A fresh
    instance's start and first request wrote to some 1,300 of its parent's pages; the
    spare takes the first request's faults now and part of its start's. No lifespan (the
    bot's own start-up code runs once, when it serves), no log line (a bot may have added
    log sinks of its own). A hand-over arriving on ``handover_fd`` cuts it short."""
    token, before = served.token, served.token.value
    quiet = logging.getLogger("uvicorn.error")
    was_disabled = quiet.disabled
    quiet.disabled = True
    token.set(secrets.token_hex(16))
    try:
        from cattery.runtime.server import DrainingServer, make_config

        RuntimeOptions.from_env(host="127.0.0.1")
        config = make_config(served.entry, host="127.0.0.1", port=0, lifespan="off")
        server = DrainingServer(config, served.runner, shutdown_timeout=0)
        server.rehearses = True
        factory = config.get_loop_factory()
        loop = factory() if factory is not None else asyncio.new_event_loop()
        try:
            _run_cut_short(loop, _serve_once(server), handover_fd)
        finally:
            loop.close()
    except Exception as exc:  # a rehearsal never keeps a spare from serving
        logger.debug(f"A spare's rehearsal failed: {exc!r}")
    finally:
        token.value = before
        quiet.disabled = was_disabled


async def _serve_once(server: DrainingServer) -> None:
    global _rehearsed
    server.lifespan = server.config.lifespan_class(server.config)
    try:
        await server.startup()
        if server.rehearsal is not None:
            await server.rehearsal
            _rehearsed = True
        await server.shutdown()
    finally:  # cut short too: nothing stays listening or connected
        for listening in server.servers:
            listening.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()


def _run_cut_short(
    loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, None], fd: int
) -> None:
    """Run ``main`` on ``loop`` (this thread's loop meanwhile) until it ends or ``fd`` turns
    readable, then leave nothing of it running."""
    asyncio.set_event_loop(loop)
    task = loop.create_task(main)
    loop.add_reader(fd, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.remove_reader(fd)
        left = asyncio.all_tasks(loop)
        for other in left:
            other.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        asyncio.set_event_loop(None)
