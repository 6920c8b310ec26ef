"""Messages between the local backend and a forking parent, over a ``SOCK_SEQPACKET`` pair.

One JSON object per packet, so message boundaries need no framing; a fork request also
carries two descriptors (``SCM_RIGHTS``): the instance's listening socket and its log file.

backend -> parent  ``{"op": "fork", "id": N, "env": {...}, "one_session": true}`` + [sock, log]
parent -> backend  ``{"event": "ready", "pid": P, "native_threads": T}`` once, after loading
                   ``{"id": N, "pid": CHILD}`` or ``{"id": N, "error": "..."}`` per request
                   ``{"event": "exit", "pid": CHILD, "code": C}`` as each child is reaped

Standard library only: the parent imports this before anything else.
"""

from __future__ import annotations

import json
import socket
from typing import Any

#: largest packet either side reads; an env of secrets fits many times over
MAX_PACKET = 1 << 20
#: descriptors a fork request carries: the listening socket, then the log file
FORK_FDS = 2


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """``(backend end, parent end)``; neither is inheritable until passed on purpose."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


def decode(packet: bytes) -> dict[str, Any]:
    message = json.loads(packet)
    if not isinstance(message, dict):
        raise ValueError("a message must be a JSON object")
    return message
