"""Running ``bot()`` for one session at a time, with a duration cap and an end state.

The runner owns every bot task it starts; draining waits for them and cancels what is
left, so no session outlives the process silently.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from loguru import logger

from cattery.contract import BOT_STARTED, OUT_OF_MEMORY_LINE, EndState
from cattery.contract import SESSION_ENDED as SESSION_ENDED
from cattery.runtime.loader import BotFunction

CANCEL_GRACE_SECONDS = 5.0


class SessionRunner:
    """Owns the bot tasks of this instance."""

    def __init__(self, bot: BotFunction, *, image_version: str = "unknown") -> None:
        self._bot = bot
        self._image_version = image_version
        self._tasks: set[asyncio.Task[EndState]] = set()
        self._ended: list[Callable[[EndState], None]] = []
        self.draining = False

    def on_session_end(self, callback: Callable[[EndState], None]) -> None:
        """Call ``callback`` with the end state after each session."""
        self._ended.append(callback)

    @property
    def active(self) -> int:
        return len(self._tasks)

    def start(self, args: Any, *, max_seconds: float | None = None) -> asyncio.Task[EndState]:
        """Log the session's start and run ``bot(args)``, entered on the loop's next turn;
        the returned task, owned, watches it and ends with the session's end state."""
        session_id = args.session_id or "NONE"
        metadata = json.dumps({"session_id": args.session_id, "image_version": self._image_version})
        with logger.contextualize(session_id=session_id):
            logger.info(f"{BOT_STARTED} with metadata: {metadata}")
            # the bot's task first: it runs before the one that watches it
            bot_task = asyncio.create_task(_called(self._bot, args))
            task = asyncio.create_task(
                self._watch(bot_task, metadata, max_seconds), name=f"session-{args.session_id}"
            )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # a watcher cancelled before its first step never ran its cleanup: stop the bot
        task.add_done_callback(lambda _: bot_task.done() or bot_task.cancel())
        return task

    async def run(self, args: Any, *, max_seconds: float | None = None) -> EndState:
        task = self.start(args, max_seconds=max_seconds)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _watch(
        self, bot_task: asyncio.Task[Any], metadata: str, max_seconds: float | None
    ) -> EndState:
        state = EndState.TERMINATED
        try:
            state = await self._invoke(bot_task, max_seconds)
            return state
        finally:
            logger.info(f"Stopping bot session with metadata: {metadata}")
            logger.info(f"{SESSION_ENDED} {state.value}")
            for callback in self._ended:
                callback(state)

    async def _invoke(self, bot_task: asyncio.Task[Any], max_seconds: float | None) -> EndState:
        try:
            done, _ = await asyncio.wait({bot_task}, timeout=max_seconds)
        except asyncio.CancelledError:
            # Only the runtime cancels a session task (drain cut-off, request gone).
            logger.warning("Session cut off by the runtime; stopping the bot")
            await _cancel(bot_task)
            return EndState.TERMINATED
        if not done:
            logger.warning(
                f"Session reached its max duration of {max_seconds:g} s; cancelling the bot"
            )
            await _cancel(bot_task)
            return EndState.TERMINATED
        if bot_task.cancelled():
            logger.warning("bot() was cancelled")
            return EndState.TERMINATED
        exc = bot_task.exception()
        if isinstance(exc, MemoryError):
            logger.error(f"{OUT_OF_MEMORY_LINE} ({exc!r})")
            return EndState.OUT_OF_MEMORY
        if exc is not None:
            logger.opt(exception=exc).error(f"Exception running bot(): {exc!r}")
            return EndState.AGENT_ERROR
        return EndState.COMPLETED

    async def drain(self, timeout: float) -> None:
        """Stop taking sessions, wait up to ``timeout`` for running ones, cancel the rest."""
        self.draining = True
        if self._tasks:
            logger.info(f"Draining: waiting up to {timeout:g} s for {len(self._tasks)} session(s)")
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            if pending:
                logger.warning(f"Shutdown timeout reached; cutting off {len(pending)} session(s)")
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)


def _called(bot: BotFunction, args: Any) -> Any:
    """``bot(args)``; a call that fails at once (a wrong signature) fails the bot's task,
    as an error inside ``bot()`` does."""
    try:
        return bot(args)
    except Exception as exc:
        return _raise(exc)


async def _raise(exc: Exception) -> None:
    raise exc


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    _, pending = await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
    if pending:
        logger.error(f"bot() ignored cancellation for {CANCEL_GRACE_SECONDS:g} s; abandoning it")
