"""What every public request looks up, kept in memory: the caller's key, the agent to start.

A warm start or a Session API call would otherwise spend most of its time in the
database (on SQLite each query is a hop to aiosqlite's thread): the key, then the agent
and its active deployment. Entries are dropped at once by the private API handlers that
change them (``forget_keys``, ``forget_agent`` after their commit), and in any case after
``ttl`` seconds: the bound for a change this process did not make (another control plane
sharing the database). Only hits are kept: a new key or agent is found on its first use.
An entry used in the second half of its life is read again in the background, so one in
steady use is never missed (a miss is a database read on the start's path) and is still
never served past its ``ttl``.
Secrets are never kept here: a deployment reads its secret set when it is deployed.

A lookup that raced with a change can't put the old row back: ``forget_*`` bumps a
generation, and an answer read under an older generation is returned but not kept.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cattery.errors import AgentNotFound
from cattery.store import repositories as repo
from cattery.store.crypto import hash_key
from cattery.store.models import Organization
from cattery.tasks import OwnedTasks

#: how long an entry may be served without asking the database again
DEFAULT_TTL_SECONDS = 5.0
#: entries per kind; the oldest go first
DEFAULT_MAX_ENTRIES = 10_000

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key of one organization (the organization a detached copy)."""

    key_id: str
    kind: str
    organization: Organization
    user_id: str | None


@dataclass(frozen=True)
class AgentTarget:
    """What a start needs of an agent: its ids and its active deployment's session cap."""

    organization_id: str
    name: str
    agent_id: str
    deployment_id: str | None
    max_session_duration: int | None
    #: the deployment's ``websocketAuth`` (``token``: carriers' WebSockets need a token)
    websocket_auth: str | None = None
    #: how long a start may wait for an instance when the pool is full
    start_queue_seconds: int = 0


class _Entries(Generic[K, V]):
    """A bounded map whose entries expire ``ttl`` seconds after they were stored."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.generation = 0

    def get(self, key: K) -> V | None:
        found = self._data.get(key)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._data[key]
            return None
        return found[1]

    def due(self, key: K) -> bool:
        """Whether ``key``'s entry is in the second half of its life (time to read it again)."""
        found = self._data.get(key)
        return found is not None and found[0] - self._clock() < self._ttl / 2

    def drop(self, key: K) -> None:
        self._data.pop(key, None)

    def put(self, key: K, value: V, generation: int) -> None:
        if generation != self.generation or self._ttl <= 0:
            return  # something changed while the value was read: it may be stale
        self._data[key] = (self._clock() + self._ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self._max:
            self._data.popitem(last=False)

    def forget(self, match: Callable[[K, V], bool]) -> None:
        self.generation += 1
        for key in [k for k, (_, v) in self._data.items() if match(k, v)]:
            del self._data[key]

    def __len__(self) -> int:
        return len(self._data)


class Lookups:
    """Keys by their hash, agents by (organization, name). Owned by the control state."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys: _Entries[str, Principal] = _Entries(ttl, max_entries, clock)
        self._agents: _Entries[tuple[str, str], AgentTarget] = _Entries(ttl, max_entries, clock)
        self._refreshing: set[object] = set()
        self._tasks = OwnedTasks("lookups")

    def _refresh(self, key: object, read: Callable[[], Coroutine[Any, Any, object]]) -> None:
        """Read an entry again in the background, once at a time per entry."""
        if key in self._refreshing or self._tasks.closed:
            return
        self._refreshing.add(key)

        async def reading() -> None:
            try:
                await read()
            except AgentNotFound:
                pass  # gone: the read dropped it
            finally:
                self._refreshing.discard(key)

        self._tasks.spawn(reading(), "refresh_task")

    async def principal(
        self, sessionmaker: async_sessionmaker[AsyncSession], raw_key: str
    ) -> Principal | None:
        """The caller holding ``raw_key``, or None for an unknown or revoked key.

        A hit touches no database session; a miss reads in a short one of its own.
        """
        hashed = hash_key(raw_key)
        cached = self._keys.get(hashed)
        if cached is not None:
            if self._keys.due(hashed):
                self._refresh(("key", hashed), lambda: self._read_key(sessionmaker, raw_key))
            return cached
        return await self._read_key(sessionmaker, raw_key)

    async def _read_key(
        self, sessionmaker: async_sessionmaker[AsyncSession], raw_key: str
    ) -> Principal | None:
        hashed = hash_key(raw_key)
        generation = self._keys.generation
        async with sessionmaker() as db:
            found = await repo.find_active_api_key(db, raw_key)
        if found is None:
            self._keys.drop(hashed)
            return None
        key, org = found
        principal = Principal(
            key_id=key.id, kind=key.kind, organization=_detached(org), user_id=key.user_id
        )
        self._keys.put(hashed, principal, generation)
        return principal

    async def agent(
        self, sessionmaker: async_sessionmaker[AsyncSession], org: Organization, name: str
    ) -> AgentTarget:
        """The organization's live agent ``name`` and its active deployment; else 404.

        A hit touches no database session; a miss reads in a short one of its own.
        """
        cached = self._agents.get((org.id, name))
        if cached is not None:
            if self._agents.due((org.id, name)):
                self._refresh(
                    ("agent", org.id, name), lambda: self._read_agent(sessionmaker, org, name)
                )
            return cached
        return await self._read_agent(sessionmaker, org, name)

    async def _read_agent(
        self, sessionmaker: async_sessionmaker[AsyncSession], org: Organization, name: str
    ) -> AgentTarget:
        generation = self._agents.generation
        async with sessionmaker() as db:
            agent = await repo.get_agent(db, org.id, name)
            if agent is None:
                self._agents.drop((org.id, name))
                raise AgentNotFound(f"Agent {name!r} not found")
            dep = (
                await repo.get_deployment(db, agent.active_deployment_id)
                if agent.active_deployment_id
                else None
            )
        target = AgentTarget(
            organization_id=org.id,
            name=name,
            agent_id=agent.id,
            deployment_id=dep.id if dep is not None else None,
            max_session_duration=dep.max_session_duration if dep is not None else None,
            websocket_auth=dep.websocket_auth if dep is not None else None,
            start_queue_seconds=dep.start_queue_seconds if dep is not None else 0,
        )
        self._agents.put((org.id, name), target, generation)
        return target

    def forget_keys(self, organization_id: str) -> None:
        """An organization's keys changed (one revoked): ask the database next time."""
        self._keys.forget(lambda _, p: p.organization.id == organization_id)

    def forget_agent(self, organization_id: str, name: str | None = None) -> None:
        """An agent (``None``: every agent of the organization) was deployed, changed or
        deleted: ask the database next time."""
        self._agents.forget(
            lambda key, _: key[0] == organization_id and (name is None or key[1] == name)
        )

    def clear(self) -> None:
        self._keys.forget(lambda *_: True)
        self._agents.forget(lambda *_: True)

    async def aclose(self) -> None:
        """Stop reading entries again."""
        await self._tasks.aclose()

    def sizes(self) -> tuple[int, int]:
        """``(keys, agents)`` held now."""
        return len(self._keys), len(self._agents)


def _detached(org: Organization) -> Organization:
    """A copy no database session knows: a rollback in one request expires the rows of
    its session, and a cached row shared with later requests must not be one of them."""
    return Organization(
        id=org.id,
        name=org.name,
        verbose_name=org.verbose_name,
        default_region=org.default_region,
        created_at=org.created_at,
    )
