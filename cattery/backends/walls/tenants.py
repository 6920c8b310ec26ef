"""One unprivileged user per organization, from a range of uids with no ``/etc/passwd`` entry.

cattery picks ``CATTERY_TENANT_UID_BASE`` + n for the n-th organization it runs instances
of (group id the same number), and remembers the choice in ``tenants.json`` in the state
dir, so an organization keeps its uid across restarts and the files its bots wrote stay
theirs. No system user is created: nothing on the host changes, and no other program
knows these ids. Each tenant has a home folder, ``<state dir>/homes/<uid>`` (0700, its
own), which its instances see as ``HOME``; nothing else of the state dir is visible to them.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

#: far above the ids distributions give to people and services (and to rootless
#: containers' subordinate ranges), below 2^31
DEFAULT_UID_BASE = 1_500_000_000
DEFAULT_UID_COUNT = 1_000_000


@dataclass(frozen=True)
class Tenant:
    organization: str
    uid: int
    gid: int
    home: Path


class TenantIds:
    """The organizations' uids, persisted in ``state_dir/tenants.json``. Owned by a backend."""

    def __init__(
        self, state_dir: Path, base: int = DEFAULT_UID_BASE, count: int = DEFAULT_UID_COUNT
    ) -> None:
        self.path = Path(state_dir) / "tenants.json"
        self.homes = Path(state_dir) / "homes"
        self.base = base
        self.count = count
        self._lock = threading.Lock()
        self._uids: dict[str, int] = self._load()

    def _load(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return {str(org): int(uid) for org, uid in data.get("organizations", {}).items()}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"organizations": self._uids}, out, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    def tenant(self, organization: str) -> Tenant:
        """The organization's user, allocated (and its home made) on first use."""
        with self._lock:
            uid = self._uids.get(organization)
            if uid is None:
                taken = set(self._uids.values())
                uid = next(u for u in range(self.base, self.base + self.count) if u not in taken)
                self._uids[organization] = uid
                self._save()
        home = self.homes / str(uid)
        if not home.is_dir():
            self.homes.mkdir(mode=0o711, parents=True, exist_ok=True)
            home.mkdir(mode=0o700, exist_ok=True)
            os.chown(home, uid, uid)
        return Tenant(organization=organization, uid=uid, gid=uid, home=home)
