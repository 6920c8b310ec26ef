"""All agents' pools, by agent key. Created in the control plane's lifespan; owns the pools."""

from __future__ import annotations

import asyncio

from loguru import logger

from cattery.backends.base import Backend, InstanceSpec
from cattery.pools.options import PoolOptions, PoolStats
from cattery.pools.pool import Pool


class PoolManager:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._pools: dict[str, Pool] = {}
        self._closed = False

    async def ensure(self, key: str, spec: InstanceSpec, options: PoolOptions) -> Pool:
        """The pool for ``key``, created and started, or updated to ``spec`` and ``options``."""
        if self._closed:
            raise RuntimeError("the pool manager is closed")
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = Pool(key, spec, options, self.backend)
            await pool.start()
        else:
            await pool.update(spec, options)
        return pool

    def get(self, key: str) -> Pool | None:
        return self._pools.get(key)

    def keys(self) -> list[str]:
        return list(self._pools)

    def stats(self) -> dict[str, PoolStats]:
        return {key: pool.stats() for key, pool in self._pools.items()}

    async def remove(self, key: str) -> None:
        """Close the pool of ``key`` (its sessions end) and forget it."""
        pool = self._pools.pop(key, None)
        if pool is not None:
            await pool.aclose()

    async def aclose(self) -> None:
        """Close every pool. Idempotent."""
        self._closed = True
        pools = list(self._pools.values())
        self._pools.clear()
        results = await asyncio.gather(*(p.aclose() for p in pools), return_exceptions=True)
        for pool, result in zip(pools, results, strict=True):
            if isinstance(result, BaseException):
                logger.opt(exception=result).error(f"Closing pool {pool.key} failed: {result!r}")
