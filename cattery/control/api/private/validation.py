"""Names the API accepts, checked the same way on every route."""

from __future__ import annotations

import re

from cattery.errors import InvalidRequest

#: matched with ``fullmatch``: ``$`` would let a trailing newline through
AGENT_NAME = re.compile(r"[a-z0-9-]{1,63}")
SECRET_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
SET_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def check_agent_name(name: str) -> str:
    if not AGENT_NAME.fullmatch(name or ""):
        raise InvalidRequest(
            f"Invalid agent name {name!r}: use lowercase letters, digits and '-', at most 63"
        )
    return name


def check_secret_key(key: str) -> str:
    if not SECRET_KEY.fullmatch(key or ""):
        raise InvalidRequest(
            f"Invalid secret key {key!r}: use letters, digits, '_' and '-', at most 64"
        )
    return key


def check_set_name(name: str) -> str:
    if not SET_NAME.fullmatch(name or ""):
        raise InvalidRequest(f"Invalid secret set name {name!r}")
    return name
