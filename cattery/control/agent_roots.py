"""Folder agents come only from allowed roots (``CATTERY_AGENT_ROOTS``).

Any organization's private key can deploy a folder, and a folder agent's bot reads what is
in it; so a folder must be inside one of the roots the operator chose (by default the
folders given to ``cattery serve --agent``/``cattery dev`` and the state dir's builds).
Checked on the path as given and on where it really leads: a path with ``..``, one that
leaves the roots through a symlink (the folder's or its ``bot.py``'s), or one longer than
the system allows is refused with a 400 and a code saying which.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cattery.errors import InvalidRequest

NOT_ALLOWED = "AGENT_FOLDER_NOT_ALLOWED"
PATH_INVALID = "AGENT_PATH_INVALID"
PATH_TOO_LONG = "AGENT_PATH_TOO_LONG"
#: used where the system won't say (``pathconf`` fails)
PATH_MAX = 4096
NAME_MAX = 255


def _limits() -> tuple[int, int]:
    try:
        return os.pathconf("/", "PC_PATH_MAX"), os.pathconf("/", "PC_NAME_MAX")
    except (OSError, ValueError):
        return PATH_MAX, NAME_MAX


def check_path_shape(text: str) -> None:
    """Refuse a path the system can't hold, or one that climbs with ``..``."""
    path_max, name_max = _limits()
    if len(os.fsencode(text)) >= path_max or any(
        len(os.fsencode(part)) > name_max for part in text.split("/")
    ):
        raise InvalidRequest(
            f"The agent's folder path is longer than this system allows ({path_max} bytes, "
            f"{name_max} per name)",
            code=PATH_TOO_LONG,
        )
    if "\0" in text or ".." in text.split("/"):
        raise InvalidRequest(
            "The agent's folder path may not contain '..' or NUL characters", code=PATH_INVALID
        )


def _inside(path: str, root: Path) -> bool:
    return os.path.commonpath([path, str(root)]) == str(root)


def check_inside_roots(folder: Path, roots: Sequence[Path]) -> None:
    """Refuse ``folder`` unless it, and its ``bot.py``, really lie inside one of ``roots``."""
    real_folder = os.path.realpath(folder)
    real_bot = os.path.realpath(folder / "bot.py")
    for root in roots:
        if _inside(real_folder, root) and _inside(real_bot, root):
            return
    allowed = ", ".join(str(r) for r in roots) or "none are configured"
    raise InvalidRequest(
        f"Folder {folder} is not inside the folders agents may come from ({allowed}); "
        "set CATTERY_AGENT_ROOTS to allow more",
        code=NOT_ALLOWED,
    )
