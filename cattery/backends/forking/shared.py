"""The shared parent: one per interpreter, it imports the common stack once and forks agents'
parents from it.

Run by the local backend as ``python -P -m cattery.backends.forking.shared --control-fd N
--lifeline-fd M`` with the allow-listed part of the server's environment and nobody's
secrets. It

1. imports what every agent's parent would (``pipecatcloud``, Pipecat's pipeline,
   transports and serializers, cattery's runtime, FastAPI and uvicorn: ``preload``), then
   disables and freezes the garbage collector, so the pages it holds stay shared with every
   agent parent it forks and every instance those fork;
2. runs no agent code and holds no agent's secret: a request to form an agent's parent
   (``{"op": "parent", "id": N, "walls": {...}}``) carries only its walls (folder, cgroup,
   user, view of the files: ``Walls.plan``) and two descriptors, the agent parent's control
   socket and its log file;
3. forks the agent's parent, which leaves this session, enters its walls (as root: cgroup,
   mount namespace, then the organization's user) and only then reads its bot and
   environment from its own control socket, straight from the backend
   (``parent.serve_formed``), and imports ``bot.py``;
4. reaps the agent parents it formed and reports each exit code, as a forking parent does
   for its children; it exits when the backend closes its socket, and its death touches no
   agent parent (each leads its own session).

One limit of sharing: a library the shared parent imported read its environment then, so a
value it reads at import time is the server's allow-listed one, not the agent's (the
runtime's own options are read again in each agent parent and child).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.util
import os
import socket
import sys
import threading
from typing import NoReturn

from cattery.backends.forking.detach import detach, run_then_exit
from cattery.backends.forking.parent import (
    EXIT_THREADS,
    ForkingParent,
    preload_serving_modules,
    send_refusal,
    wait_started,
)

#: what bots commonly import, loaded once here when the package that provides it is installed
#: (module, the distribution's top-level package): Pipecat's optional services log errors
#: when imported without their package, so they are not tried blind. Nothing that opens a
#: file or starts a thread at import belongs here (onnxruntime, under Silero's VAD, opens
#: a telemetry database in ``$HOME``): agents' parents would inherit it from root.
COMMON_MODULES = (
    ("pipecat.frames.frames", "pipecat"),
    ("pipecat.pipeline.pipeline", "pipecat"),
    ("pipecat.pipeline.runner", "pipecat"),
    ("pipecat.pipeline.task", "pipecat"),
    ("pipecat.processors.frame_processor", "pipecat"),
    ("pipecat.processors.audio.vad_processor", "pipecat"),
    ("pipecat.processors.aggregators.llm_context", "pipecat"),
    ("pipecat.processors.aggregators.llm_response_universal", "pipecat"),
    ("pipecat.runner.types", "pipecat"),
    ("pipecat.runner.utils", "pipecat"),
    ("pipecat.serializers.twilio", "pipecat"),
    ("pipecat.serializers.telnyx", "pipecat"),
    ("pipecat.serializers.plivo", "pipecat"),
    ("pipecat.serializers.exotel", "pipecat"),
    ("pipecat.transports.base_transport", "pipecat"),
    ("pipecat.transports.websocket.fastapi", "fastapi"),
    ("pipecat.transports.smallwebrtc.transport", "aiortc"),
    ("pipecat.transports.daily.transport", "daily"),
    ("pipecatcloud_system", "pipecatcloud_system"),
    ("cattery.backends.walls.enter", "cattery"),
)
#: what an agent parent exits with when it can't enter its walls
EXIT_WALLS_FAILED = 126


def preload() -> None:
    """Import the common stack: what ``prepare`` imports before a bot, then the rest."""
    from cattery.runtime.confine import hide_self

    hide_self()
    import pipecatcloud.agent  # noqa: F401  (its import resets loguru)

    from cattery.runtime.logs import configure_logging
    from cattery.runtime.main import prepare  # noqa: F401
    from cattery.runtime.options import RuntimeOptions

    options = RuntimeOptions.from_env(host="127.0.0.1")
    configure_logging(options.log_level)
    preload_serving_modules()
    for module, package in COMMON_MODULES:
        if importlib.util.find_spec(package) is None:
            continue
        try:
            importlib.import_module(module)
        except Exception as exc:  # a broken optional package: the bot meets it, not us
            print(f"cattery shared parent: not preloaded: {module} ({exc!r})", file=sys.stderr)
    warm_runtime_app(options)


async def _no_bot(runner_args: object) -> None:
    """The bot of the throwaway app ``warm_runtime_app`` builds."""


def warm_runtime_app(options: object) -> None:
    """Build the runtime's app once for no bot, then undo it: the lazy set-up that building
    it does the first time (FastAPI's and pydantic's, for the runtime's own routes) is then
    shared by every agent parent, which builds its own app for its bot."""
    from pathlib import Path
    from types import ModuleType

    from cattery.runtime.app import Unbuilt
    from cattery.runtime.loader import LoadedBot
    from cattery.runtime.main import prebuild
    from cattery.runtime.system import get_app

    app = get_app()
    unbuilt = Unbuilt.of(app)
    try:
        prebuild(LoadedBot(Path("/nonexistent/bot.py"), ModuleType("bot"), _no_bot, None), options)  # type: ignore[arg-type]
    finally:
        unbuilt.restore(app)


class SharedParent(ForkingParent):
    """Forms agent parents on request; owns the ``SIGCHLD`` wake-up pipe and every agent
    parent it forked until that one is reaped (never beyond: it leads its own session)."""

    OP = "parent"

    def __init__(self, control: socket.socket, lifeline_fd: int) -> None:
        super().__init__(None, control, lifeline_fd)

    @property
    def spares(self) -> dict:
        return {}  # agent parents are formed on demand only

    def fork(self, request: dict, fds: list[int]) -> dict[str, object]:
        sys.stdout.flush()
        sys.stderr.flush()
        walls = request.get("walls") or {}
        started_r, started_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            form_agent_parent(
                control_fd=fds[0],
                log_fd=fds[1],
                started_fd=started_w,
                walls=walls,
                lifeline_fd=self.lifeline_fd,
                parent_fds=[self.control.fileno(), self._wake_r, self._wake_w, started_r],
            )
        self.children.add(pid)
        wait_started(started_r, started_w)
        return {"pid": pid}


def form_agent_parent(
    *,
    control_fd: int,
    log_fd: int,
    started_fd: int,
    walls: dict,
    lifeline_fd: int,
    parent_fds: list[int],
) -> NoReturn:
    """In the freshly forked agent parent: leave the shared parent, enter the walls, then
    load the bot the backend names and serve its forks; never returns."""

    def work() -> None:
        detach(log_fd=log_fd, started_fd=started_fd, parent_fds=parent_fds)
        from cattery.backends.walls.enter import enter_walls

        try:
            enter_walls(walls)
        except OSError as exc:
            print(f"cattery: could not enter the agent parent's walls: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_WALLS_FAILED) from None
        from cattery.backends.forking.parent import serve_formed

        serve_formed(socket.socket(fileno=control_fd), lifeline_fd)

    run_then_exit(work)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cattery-shared-parent")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    args = parser.parse_args(argv)
    gc.disable()  # no holes in pages every agent parent shares; its children enable it
    control = socket.socket(fileno=args.control_fd)
    preload()
    if threading.active_count() > 1:
        names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        reason = f"importing the common stack started threads ({', '.join(names)})"
        print(f"cattery shared parent: {reason}", file=sys.stderr)
        send_refusal(control, reason)
        raise SystemExit(EXIT_THREADS)
    gc.freeze()
    SharedParent(control, args.lifeline_fd).run()


if __name__ == "__main__":
    main()
