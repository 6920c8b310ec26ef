"""``python -m bench.pipecat_runner FOLDER --port N``: Pipecat's development runner serving
FOLDER's ``bot.py``, as ``python bot.py`` would. Standard library imports only, so the
process holds what the runner and the bot import, and nothing of the benchmark's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def serve(folder: Path, port: int) -> None:
    """Run Pipecat's runner on ``folder``'s bot, in this process, until it is stopped."""
    os.chdir(folder)
    sys.path.insert(0, str(folder))  # the runner finds the bot with ``import bot``
    from loguru import logger
    from pipecat.runner import run

    # The runner sends everything to stderr at DEBUG; the benchmark's instances log at
    # PIPECAT_LOG_LEVEL (INFO), so the runner does too: same logging work per session.
    level = os.environ.get("PIPECAT_LOG_LEVEL", "INFO")
    add = logger.add

    def add_at_level(sink: Any, **options: Any) -> int:
        return add(sink, **{**options, "level": level})

    logger.add = add_at_level  # type: ignore[method-assign]
    sys.argv = ["bot.py", "--host", "127.0.0.1", "--port", str(port)]
    run.main()


if __name__ == "__main__":
    serve(Path(sys.argv[1]).resolve(), int(sys.argv[sys.argv.index("--port") + 1]))
