"""JSON from callers, parsed with a bound on nesting: a deep document is a bad request,
never a ``RecursionError`` deep in the parser or the code that walks the result.

Stdlib only: the runtime and the control plane both read callers' JSON through here.
"""

from __future__ import annotations

import json
from typing import Any

#: deeper than any real body (Pipecat's session bodies, carriers' webhooks) needs
MAX_JSON_DEPTH = 64


class JSONTooDeep(ValueError):
    """A ``ValueError``, as any other malformed JSON is, so callers refuse it the same way."""


def loads(raw: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(raw)``, refusing documents nested deeper than ``max_depth``."""
    try:
        data = json.loads(raw)
    except RecursionError as exc:
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels") from exc
    if depth_exceeds(data, max_depth):
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    return data


def depth_exceeds(data: Any, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` nests containers deeper than ``max_depth``; walked without recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
