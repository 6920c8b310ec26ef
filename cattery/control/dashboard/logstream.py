"""A session's log lines as server-sent events, as they are stored.

The stream polls the store (the log router writes every quarter second) with a short
database session per tick, so a watcher never holds a transaction open. It ends, with an
``end`` event, once the session has ended and its last lines have been sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from cattery.control.state import ControlState
from cattery.control.wire import iso
from cattery.store import repositories as repo

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
#: polls with nothing new after the session ended, before the stream ends
QUIET_POLLS_AFTER_END = 3
#: no stream lasts longer than the longest session, plus a margin
MAX_STREAM_SECONDS = 4 * 3600 + 600


def event(data: dict[str, object], *, name: str | None = None, event_id: int | None = None) -> str:
    head = (f"id: {event_id}\n" if event_id is not None else "") + (
        f"event: {name}\n" if name else ""
    )
    return f"{head}data: {json.dumps(data)}\n\n"


async def follow(state: ControlState, session_id: str, after_id: int) -> AsyncIterator[str]:
    """Lines after ``after_id``, then whatever the session prints, until it has ended."""
    deadline = time.monotonic() + MAX_STREAM_SECONDS
    quiet_since_end = 0
    last_sent = time.monotonic()
    yield "retry: 2000\n\n"
    while time.monotonic() < deadline:
        async with state.sessionmaker() as db:
            lines = await repo.list_session_log_lines_after(db, session_id, after_id)
            session = None if lines else await repo.get_session_by_id(db, session_id)
        for line in lines:
            after_id = line.id
            yield event({"ts": iso(line.ts), "line": line.line}, event_id=line.id)
        if lines:
            last_sent = time.monotonic()
        elif session is None or session.ended_at is not None:
            quiet_since_end += 1
            if quiet_since_end >= QUIET_POLLS_AFTER_END:
                ended = session.end_state if session is not None else None
                yield event({"endState": ended}, name="end")
                return
        elif time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            last_sent = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(POLL_SECONDS)
