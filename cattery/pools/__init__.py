"""Pools of instances per agent: warm target, cap, cooldown, refill, acquire and release."""

from cattery.pools.manager import PoolManager
from cattery.pools.options import Lease, PoolOptions, PoolStats
from cattery.pools.pool import Pool

__all__ = ["Lease", "Pool", "PoolManager", "PoolOptions", "PoolStats"]
