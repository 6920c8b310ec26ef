"""``cattery token create --admin``: a new admin token in the state a ``cattery serve`` with
the same settings uses, printed once. For a lost first token; the server needn't run."""

from __future__ import annotations

import asyncio

from cattery.control.bootstrap import mint_admin_token
from cattery.settings import Settings
from cattery.store.db import create_engine, sessionmaker
from cattery.store.migrate import migrate


async def _create(settings: Settings, name: str) -> str:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    await migrate(url)
    engine = create_engine(url)
    try:
        async with sessionmaker(engine).begin() as db:
            return await mint_admin_token(db, settings, name)
    finally:
        await engine.dispose()


def create_admin_token(settings: Settings, name: str) -> str:
    """The new token's raw value (only its hash is stored)."""
    return asyncio.run(_create(settings, name))
