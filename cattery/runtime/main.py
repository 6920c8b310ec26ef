"""``cattery runtime PATH``: load a bot, then serve it; a bot that can't load never listens."""

from __future__ import annotations

import sys

from loguru import logger

from cattery.runtime.loader import BotLoadError, LoadedBot, load_bot
from cattery.runtime.logs import configure_logging
from cattery.runtime.options import RuntimeOptions

EXIT_BAD_BOT = 2


def prepare(path: str, options: RuntimeOptions) -> LoadedBot:
    """Everything that can happen before a socket exists: logging, then the bot's import.

    Importing ``pipecatcloud`` replaces loguru's handlers, and a bot may import it, so
    logging is set up again once the bot is loaded (the pipecat-base image's order).
    """
    from cattery.runtime.confine import hide_self

    hide_self()  # the environment holds the agent's secrets; the bot's import may take long
    import pipecatcloud.agent  # noqa: F401  (its import resets loguru)

    configure_logging(options.log_level)
    try:
        loaded = load_bot(path)
    except BotLoadError as exc:
        print(f"cattery runtime: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BAD_BOT) from None
    configure_logging(options.log_level)
    return loaded


def serve_loaded(
    loaded: LoadedBot,
    options: RuntimeOptions,
    *,
    fd: int | None = None,
    one_session: bool = False,
    parent_pid: int | None = None,
    owner_fd: int | None = None,
) -> None:
    from cattery.runtime import observers, tracing
    from cattery.runtime.app import build_app
    from cattery.runtime.confine import confine_self, reap_descendants
    from cattery.runtime.features import FeatureKey, enabled, log_features_summary
    from cattery.runtime.server import serve

    if enabled(options, FeatureKey.OBSERVABILITY_OBSERVERS):
        observers.install()
    tracing.setup(options.otlp_endpoint)
    if options.log_features_summary:
        log_features_summary(options)
    app, runner = build_app(loaded, options)
    logger.info(f"Serving {loaded.path} (image version {options.image_version})")
    confine_self(options.memory_limit_bytes)
    try:
        serve(
            app,
            runner,
            host=options.host,
            port=options.port,
            shutdown_timeout=options.shutdown_timeout,
            fd=fd,
            one_session=one_session,
            parent_pid=parent_pid,
            owner_fd=owner_fd,
        )
    finally:
        left = reap_descendants()
        if left:
            logger.info(f"Stopped {left} process(es) the session left behind")


def serve_forked(loaded: LoadedBot, *, fd: int, one_session: bool, owner_fd: int | None) -> None:
    """Serve a bot ``prepare`` loaded in a parent, in a child forked from it, on ``fd``.

    The child's environment is its own by now, so options and logging are read again.
    ``owner_fd`` is the read end of a pipe only the owner writes to: once it reads end of
    file and no session runs, the instance exits (``--parent-pid`` for a forked child).
    """
    options = RuntimeOptions.from_env(host="127.0.0.1")
    configure_logging(options.log_level)
    serve_loaded(loaded, options, fd=fd, one_session=one_session, owner_fd=owner_fd)


def run_runtime(
    path: str,
    *,
    host: str | None,
    port: int | None,
    fd: int | None,
    one_session: bool = False,
    parent_pid: int | None = None,
) -> None:
    options = RuntimeOptions.from_env(host=host, port=port)
    loaded = prepare(path, options)
    serve_loaded(loaded, options, fd=fd, one_session=one_session, parent_pid=parent_pid)
