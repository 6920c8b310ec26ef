"""Messages between the local backend and a forking parent, over a ``SOCK_SEQPACKET`` pair.

One JSON object per packet, so message boundaries need no framing; a fork request also
carries descriptors (``SCM_RIGHTS``): the instance's listening socket and its log file,
then, as the request says, the write end of its readiness pipe (``"ready": true``) and
its cgroup's directory to be born in (``"cgroup": true``).

backend -> parent  ``{"op": "fork", "id": N, "env": {...}, "one_session": true,
                   "ready": true, "cgroup": true}`` + [sock, log, ready, cgroup]
                   ``{"op": "spare", "id": N, "cgroup": true}`` + [cgroup]: fork a child
                   that waits, born in that cgroup, for the next fork request that says
                   ``"spare": true`` (it then carries no cgroup): that request is served by
                   the spare at once, so no fork is on its path
parent -> backend  ``{"event": "ready", "pid": P, "native_threads": T}`` once, after loading
                   ``{"id": N, "pid": CHILD, "cgroup": true}`` (born in the cgroup sent,
                   else false) or ``{"id": N, "error": "..."}`` per request
                   ``{"event": "exit", "pid": CHILD, "code": C}`` as each child is reaped

Standard library only: the parent imports this before anything else.
"""

from __future__ import annotations

import json
import socket
from typing import Any

#: largest packet either side reads; an env of secrets fits many times over
MAX_PACKET = 1 << 20
#: descriptors every request carries: the listening (or control) socket, then the log file
FORK_FDS = 2
#: the most a fork request carries: those, the readiness pipe and the cgroup
MAX_FDS = 4
#: a fork request's optional descriptors, in the order they follow ``FORK_FDS``
OPTIONAL_FDS = ("ready", "cgroup")


#: the request that makes a spare child
SPARE_OP = "spare"


def expected_fds(request: dict[str, Any]) -> int:
    """How many descriptors ``request`` says it carries."""
    base = 0 if request.get("op") == SPARE_OP else FORK_FDS
    return base + sum(1 for name in OPTIONAL_FDS if request.get(name))


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
