"""Names, sizes and strings the API accepts, checked the same way on every route."""

from __future__ import annotations

import re

from cattery.errors import InvalidRequest, PayloadTooLarge
from cattery.store.repositories._validate import SECRET_KEY, check_slug
from cattery.store.repositories._validate import SLUG as AGENT_NAME

#: starts with a letter or digit: never ``.``, ``..`` or a hidden name (matched with
#: ``fullmatch``: ``$`` would let a trailing newline through)
SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
NAME_RULES = {
    "agent profile name": (AGENT_NAME, "lowercase letters, digits and inner '-', at most 63"),
    "secret set name": (
        SET_NAME,
        "letters, digits, '_', '-' and '.', starting with a letter or digit, at most 255",
    ),
}
#: one secret's value, and all of a set's values together (an instance's environment
#: has to hold them: the OS refuses a start past a few MB)
MAX_SECRET_VALUE_BYTES = 64 * 1024
MAX_SECRET_SET_BYTES = 1024 * 1024
#: what an image (a folder path or an image reference) may be: the column's length, and
#: the OS's limit on one path component
MAX_IMAGE_CHARS = 1024
MAX_PATH_COMPONENT_BYTES = 255
#: control characters (NUL, newlines, ...) have no place in a name, path or reference
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(kind: str, name: str) -> str:
    """Every named resource (agents, secret sets) goes through here: one rule per kind."""
    pattern, rule = NAME_RULES[kind]
    if not pattern.fullmatch(name or ""):
        raise InvalidRequest(f"Invalid {kind} {name!r}: use {rule}")
    return name


def check_agent_name(name: str) -> str:
    """The one rule for agent names, the store's own (it checks it again on create)."""
    return check_slug(name or "", "agent")


def check_set_name(name: str) -> str:
    return check_name("secret set name", name)


def check_secret_key(key: str) -> str:
    if not SECRET_KEY.fullmatch(key or ""):
        raise InvalidRequest(
            f"Invalid secret key {key!r}: use letters, digits, '_' and '-', at most 64"
        )
    return key


def check_secret_sizes(values: dict[str, str]) -> None:
    """A set's values (after a write): each at most 64 KB, all together at most 1 MB."""
    total = 0
    for key, value in values.items():
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_SECRET_VALUE_BYTES:
            raise PayloadTooLarge(
                f"Secret {key!r} is {size} bytes; a value may be at most "
                f"{MAX_SECRET_VALUE_BYTES} bytes"
            )
        total += size + len(key)
    if total > MAX_SECRET_SET_BYTES:
        raise PayloadTooLarge(
            f"The secret set would hold {total} bytes; a set may hold at most "
            f"{MAX_SECRET_SET_BYTES} bytes"
        )


def check_text(field: str, value: str, *, max_chars: int) -> str:
    """A free string stored as given: bounded, no control characters, no surrounding spaces."""
    if len(value) > max_chars:
        raise InvalidRequest(f"{field} is {len(value)} characters; the limit is {max_chars}")
    if _CONTROL.search(value):
        raise InvalidRequest(f"{field} holds a control character")
    if value != value.strip():
        raise InvalidRequest(f"{field} has spaces around it")
    return value


def check_image(image: str) -> str:
    """An image as text, before it is understood: bounded, clean, and no path component
    longer than the OS allows."""
    check_text("image", image, max_chars=MAX_IMAGE_CHARS)
    for part in image.split("/"):
        if len(part.encode("utf-8", "surrogatepass")) > MAX_PATH_COMPONENT_BYTES:
            raise InvalidRequest(
                f"image has a path component longer than {MAX_PATH_COMPONENT_BYTES} bytes"
            )
    return image
