"""Who is logged in to the dashboard: an opaque cookie id mapped to a key held in memory.

The browser holds only a random id; the key it logged in with stays in this process, so a
stolen page or a script can never read it. Each login has its own CSRF token. Logins live
as long as this process (a restart logs everyone out) and expire after ``ttl`` seconds.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

#: how long a login lasts, from when it was made
DEFAULT_TTL_SECONDS = 12 * 3600
#: logins kept at most; the oldest go first
DEFAULT_MAX_LOGINS = 1000


@dataclass(frozen=True)
class Login:
    """One browser's login: the key it proved (never sent back) and its CSRF token."""

    token: str = field(repr=False)
    csrf: str = field(repr=False)
    expires_at: float

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class Logins:
    """Owned by the dashboard router's lifespan."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL_SECONDS,
        max_logins: int = DEFAULT_MAX_LOGINS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max = max_logins
        self._clock = clock
        self._logins: OrderedDict[str, Login] = OrderedDict()

    @property
    def ttl(self) -> float:
        return self._ttl

    def open(self, token: str) -> str:
        """A new login for ``token`` (already checked by the caller); returns its cookie id."""
        login_id = secrets.token_urlsafe(32)
        self._logins[login_id] = Login(
            token=token, csrf=secrets.token_urlsafe(32), expires_at=self._clock() + self._ttl
        )
        while len(self._logins) > self._max:
            self._logins.popitem(last=False)
        return login_id

    def get(self, login_id: str | None) -> Login | None:
        if not login_id:
            return None
        login = self._logins.get(login_id)
        if login is None:
            return None
        if login.expires_at <= self._clock():
            del self._logins[login_id]
            return None
        return login

    def close(self, login_id: str | None) -> None:
        if login_id:
            self._logins.pop(login_id, None)

    def __len__(self) -> int:
        return len(self._logins)
