"""Which live session each SmallWebRTC peer connection belongs to, for ``/api/offer``.

A client that offered on ``/api/offer`` (no session in the path) trickles its ICE
candidates and renegotiates there too, naming only its ``pc_id``; the answer to its first
offer told us which session that peer connection is in.
"""

from __future__ import annotations

import json

from fastapi import Response

from cattery.control.supervisor import LiveSession, SessionSupervisor


class PeerSessions:
    """``pc_id`` -> session id, read from answers; an entry goes once its session has ended.

    Owned by the dev router; holds ids only, never a session or an instance.
    """

    def __init__(self) -> None:
        self._session_of: dict[str, str] = {}

    def remember(self, answer: Response, live: LiveSession) -> None:
        """Note the peer connection an answer to an offer in ``live`` names."""
        if answer.status_code != 200:
            return
        try:
            pc_id = json.loads(answer.body).get("pc_id")
        except (ValueError, AttributeError):
            return
        if isinstance(pc_id, str) and pc_id:
            self._session_of[pc_id] = live.id

    def live(self, pc_id: object, supervisor: SessionSupervisor) -> LiveSession | None:
        """The live session peer connection ``pc_id`` is in, or None."""
        for known, session_id in list(self._session_of.items()):
            if supervisor.get(session_id) is None:
                del self._session_of[known]
        if not isinstance(pc_id, str):
            return None
        session_id = self._session_of.get(pc_id)
        return supervisor.get(session_id) if session_id else None
