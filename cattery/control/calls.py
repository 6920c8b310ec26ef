"""Which live session answers each WhatsApp call, so a call's later events reach it."""

from __future__ import annotations

from collections.abc import Callable


class CallMap:
    """Call id -> the session answering it; owned by the control state.

    Meta retries a webhook it waited too long for, so a call whose session is still being
    started is remembered too (``starting``): its retry must not start a second session.
    Holds ids only; an entry goes once its session is no longer live.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, str] = {}
        self._starting: set[str] = set()

    def claim(self, call_id: str) -> bool:
        """Whether ``call_id`` is new: then it is marked as starting, until ``started`` or
        ``abandon``."""
        if call_id in self._sessions or call_id in self._starting:
            return False
        self._starting.add(call_id)
        return True

    def started(self, call_id: str, session_id: str) -> None:
        self._starting.discard(call_id)
        self._sessions[call_id] = session_id

    def abandon(self, call_id: str) -> None:
        self._starting.discard(call_id)

    def session_of(self, call_id: str) -> str | None:
        return self._sessions.get(call_id)

    def prune(self, is_live: Callable[[str], bool]) -> None:
        """Forget the calls whose session has ended."""
        for call_id in [c for c, s in self._sessions.items() if not is_live(s)]:
            del self._sessions[call_id]
