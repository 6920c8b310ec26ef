"""The control plane's listening socket, bound before anything else happens.

Binding first means a port that is taken stops ``cattery serve`` (and ``cattery dev``)
before the database is touched or a one-time admin token is made and printed, and the
error names the process holding the port when this user may see it.
"""

from __future__ import annotations

import errno
import os
import socket

import psutil


def port_holder(port: int) -> str | None:
    """``PID N (command line)`` of the process listening on ``port``, when visible."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return None
            try:
                command = " ".join(psutil.Process(conn.pid).cmdline()) or "?"
            except psutil.Error:
                command = "?"
            return f"PID {conn.pid} ({command})"
    return None


def bind(host: str, port: int, command: str) -> socket.socket:
    """A listening TCP socket on ``host:port``, or ``SystemExit`` saying who holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno != errno.EADDRINUSE:
            raise SystemExit(f"{command}: error: cannot listen on {host}:{port}: {exc}") from exc
        holder = port_holder(port)
        who = f"by {holder}" if holder else "by another process"
        raise SystemExit(
            f"{command}: error: {host}:{port} is already in use {who}; "
            "stop it or choose another port with --port"
        ) from exc
    sock.set_inheritable(False)
    os.set_blocking(sock.fileno(), False)
    return sock
