"""All agents' pools, by agent key. Created in the control plane's lifespan; owns the pools.

After a restart, busy instances are reattached before their agent's pool exists (pools are
built in the background): the manager owns them until then, and hands them to the pool,
counted as busy, when it is created.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from cattery.backends.base import Backend, InstanceHandle, InstanceSpec, Retiring
from cattery.backends.handles import close_all
from cattery.pools.options import InstanceEvents, PoolOptions, PoolStats
from cattery.pools.pool import Pool


class PoolManager:
    def __init__(self, backend: Backend, events: InstanceEvents | None = None) -> None:
        """``events``: told of every pool's instances as they wait and as they go."""
        self.backend = backend
        self._events = events
        self._pools: dict[str, Pool] = {}
        #: busy instances reattached after a restart, waiting for their pool to exist
        self._adopted: dict[str, dict[str, InstanceHandle]] = {}
        self._closed = False

    async def ensure(
        self,
        key: str,
        spec: InstanceSpec,
        options: PoolOptions,
        *,
        warm: InstanceHandle | None = None,
    ) -> Pool:
        """The pool for ``key``, created and started, or updated to ``spec`` and ``options``;
        ``warm``, a ready instance of ``spec`` (a deploy's probe), becomes one of its idle
        ones."""
        if self._closed:
            raise RuntimeError("the pool manager is closed")
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(key, spec, options, self.backend, self._events)
            for handle in self._adopted.pop(key, {}).values():
                pool.adopt_busy(handle)  # counted before the pool starts any instance
            if warm is not None:
                pool.adopt_idle(warm)
            await pool.start()
        else:
            await pool.update(spec, options, warm=warm)
        return pool

    def get(self, key: str) -> Pool | None:
        return self._pools.get(key)

    def keys(self) -> list[str]:
        return list(self._pools)

    def stats(self) -> dict[str, PoolStats]:
        return {key: pool.stats() for key, pool in self._pools.items()}

    def adopt_busy(self, key: str, handle: InstanceHandle) -> None:
        """A busy instance reattached after a restart: counted by the pool of ``key`` now, or
        once that pool is created. Give it back with ``release``."""
        if self._closed:
            raise RuntimeError("the pool manager is closed")
        pool = self._pools.get(key)
        if pool is not None and not pool.closed:
            pool.adopt_busy(handle)
        else:
            self._adopted.setdefault(key, {})[handle.id] = handle

    async def release(self, key: str, handle: InstanceHandle) -> None:
        """The session on ``handle`` is over: its pool discards it, or, with no pool, we do."""
        pending = self._adopted.get(key, {})
        pending.pop(handle.id, None)
        if not pending:
            self._adopted.pop(key, None)
        pool = self._pools.get(key)
        if pool is not None:
            await pool.release(handle)
        else:
            await handle.aclose()

    async def remove(self, key: str) -> None:
        """Close the pool of ``key`` (its sessions end) and forget it; the backend lets go
        of what it kept for the agent (its forking parent)."""
        pool = self._pools.pop(key, None)
        pending = list(self._adopted.pop(key, {}).values())
        if pool is not None:
            await pool.aclose()
        await close_all(pending)
        if isinstance(self.backend, Retiring):
            await self.backend.retire(key)

    async def aclose(self) -> None:
        """Close every pool. Idempotent."""
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        pending = [h for handles in self._adopted.values() for h in handles.values()]
        self._adopted.clear()
        await close_all(pending)
        results = await asyncio.gather(*(p.aclose() for p in pools), return_exceptions=True)
        for pool, result in zip(pools, results, strict=True):
            if isinstance(result, BaseException):
                logger.opt(exception=result).error(f"Closing pool {pool.key} failed: {result!r}")
