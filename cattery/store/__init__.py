"""The control plane's persistence: models, repositories, engine and migrations.

Only ``cattery.control`` imports this package. Nothing here connects at import time:
build an engine with ``create_engine(url)``, run ``await migrate(url)`` once at start-up,
and open sessions from ``sessionmaker(engine)``.
"""

from cattery.store.crypto import (
    DecryptionError,
    KeyFileError,
    SecretBox,
    hash_key,
    load_or_create_key_file,
    new_key,
)
from cattery.store.db import create_engine, normalize_url, sessionmaker
from cattery.store.migrate import current_revision, head_revision, migrate

__all__ = [
    "DecryptionError",
    "KeyFileError",
    "SecretBox",
    "create_engine",
    "current_revision",
    "hash_key",
    "head_revision",
    "load_or_create_key_file",
    "migrate",
    "new_key",
    "normalize_url",
    "sessionmaker",
]
