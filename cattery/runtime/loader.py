"""Finding and importing a ``bot.py``, with one clear error for each way it can fail."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

BotFunction = Callable[[Any], Awaitable[Any]]


class BotLoadError(Exception):
    """``bot.py`` can't be served; the message names the file and the problem."""


@dataclass(frozen=True)
class LoadedBot:
    path: Path
    module: ModuleType
    bot: BotFunction
    readyz: Callable[[], Any] | None


def resolve_bot_path(path: str | Path) -> Path:
    """PATH is a ``bot.py`` or a folder holding one."""
    candidate = Path(path).expanduser().resolve()
    if candidate.is_dir():
        candidate = candidate / "bot.py"
    if not candidate.is_file():
        raise BotLoadError(f"{candidate}: no such file")
    return candidate


def load_bot(path: str | Path) -> LoadedBot:
    """Import the bot module as ``bot`` (as the pipecat-base image does) and check it."""
    bot_path = resolve_bot_path(path)
    folder = str(bot_path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location("bot", bot_path)
    if spec is None or spec.loader is None:
        raise BotLoadError(f"{bot_path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bot"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop("bot", None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise BotLoadError(f"{bot_path}: raised on import: {type(exc).__name__}: {exc}") from exc

    bot = getattr(module, "bot", None)
    if bot is None:
        raise BotLoadError(f"{bot_path}: defines no bot() function")
    if not inspect.iscoroutinefunction(bot):
        raise BotLoadError(
            f"{bot_path}: bot must be an async function (async def bot(runner_args))"
        )
    readyz = getattr(module, "readyz", None)
    if readyz is not None and not callable(readyz):
        raise BotLoadError(f"{bot_path}: readyz is not callable")
    return LoadedBot(path=bot_path, module=module, bot=bot, readyz=readyz)
