"""Name rules shared by repositories; breaking one is the caller's mistake (400)."""

from __future__ import annotations

import re

from cattery.errors import InvalidRequest

#: organization and agent names: DNS-label-like, as Pipecat Cloud accepts them
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
#: secret keys: what an environment variable name may safely be
SECRET_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_slug(name: str, what: str) -> str:
    """``name`` if it is lowercase letters, digits and inner hyphens, at most 63 long."""
    if not SLUG.fullmatch(name):
        raise InvalidRequest(
            f"Invalid {what} name {name!r}: use a-z, 0-9 and '-', at most 63 characters, "
            "starting and ending with a letter or digit"
        )
    return name


def check_secret_key(key: str) -> str:
    """``key`` if it is 1-64 of A-Z, a-z, 0-9, '_' and '-'."""
    if not SECRET_KEY.fullmatch(key):
        raise InvalidRequest(
            f"Invalid secret key {key!r}: use A-Z, a-z, 0-9, '_' and '-', at most 64 characters"
        )
    return key
