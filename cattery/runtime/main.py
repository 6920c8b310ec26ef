"""``cattery runtime PATH``: load a bot, then serve it; a bot that can't load never listens."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger

from cattery.runtime.loader import BotLoadError, LoadedBot, load_bot
from cattery.runtime.logs import configure_logging
from cattery.runtime.options import RuntimeOptions

if TYPE_CHECKING:
    import uvicorn

    from cattery.runtime.app import ServedApp, Unbuilt

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
    ready_fd: int | None = None,
) -> None:
    from cattery.runtime.app import build_app
    from cattery.runtime.server import make_config

    served = build_app(loaded, options)
    config = make_config(served.entry, host=options.host, port=options.port)
    _serve_built(
        loaded,
        served,
        config,
        options,
        fd=fd,
        one_session=one_session,
        parent_pid=parent_pid,
        owner_fd=owner_fd,
        ready_fd=ready_fd,
    )


def _serve_built(
    loaded: LoadedBot,
    served: ServedApp,
    config: uvicorn.Config,
    options: RuntimeOptions,
    *,
    fd: int | None,
    one_session: bool,
    parent_pid: int | None = None,
    owner_fd: int | None = None,
    ready_fd: int | None = None,
) -> None:
    from cattery.runtime import observers, tracing
    from cattery.runtime.confine import confine_self, reap_descendants
    from cattery.runtime.features import FeatureKey, enabled, log_features_summary
    from cattery.runtime.server import serve

    if enabled(options, FeatureKey.OBSERVABILITY_OBSERVERS):
        observers.install()
    tracing.setup(options.otlp_endpoint)
    if options.log_features_summary:
        log_features_summary(options)
    logger.info(f"Serving {loaded.path} (image version {options.image_version})")
    confine_self(options.memory_limit_bytes)
    try:
        serve(
            config,
            served.runner,
            shutdown_timeout=options.shutdown_timeout,
            fd=fd,
            one_session=one_session,
            parent_pid=parent_pid,
            owner_fd=owner_fd,
            ready_fd=ready_fd,
            lease=(options.lease_file, options.lease_seconds) if options.lease_file else None,
            # a pooled instance whose requests need its token can rehearse with a wrong one
            rehearses=one_session and served.token.value is not None,
        )
    finally:
        left = reap_descendants()
        if left:
            logger.info(f"Stopped {left} process(es) the session left behind")


#: the settings ``build_app`` builds into the app; the rest are read when serving
APP_SETTINGS = ("image_version", "ice_config_url", "ice_fallback_urls", "whatsapp", "esp32_host")


@dataclass(frozen=True)
class Prebuilt:
    """A bot's serving side built once, in its forking parent, before any fork: the app
    with its routes and middleware, and uvicorn's loaded settings. Building them took most
    of a forked instance's start; a child now only takes its own token and serves."""

    loaded: LoadedBot
    options: RuntimeOptions
    served: ServedApp
    config: uvicorn.Config
    unbuilt: Unbuilt

    def serves(self, options: RuntimeOptions) -> bool:
        """Whether a child with ``options`` may serve this build: the same settings for
        everything built into the app (its token, limits and logging are its own)."""
        return all(getattr(options, f) == getattr(self.options, f) for f in APP_SETTINGS)


def prebuild(loaded: LoadedBot, options: RuntimeOptions) -> Prebuilt:
    """Build what every child of a forking parent serves (``options`` are the parent's:
    the agent's once its bot is imported, without an instance token)."""
    from cattery.runtime.app import Unbuilt, build_app
    from cattery.runtime.server import make_config
    from cattery.runtime.system import get_app

    unbuilt = Unbuilt.of(get_app())
    served = build_app(loaded, options)
    # Starlette builds the middleware stack on the first request: do it once, here.
    served.app.middleware_stack = served.app.build_middleware_stack()
    config = make_config(served.entry, host=options.host, port=options.port)
    return Prebuilt(loaded, options, served, config, unbuilt)


def serve_forked(
    prepared: LoadedBot | Prebuilt,
    *,
    fd: int,
    one_session: bool,
    owner_fd: int | None,
    ready_fd: int | None = None,
) -> None:
    """Serve a bot its parent prepared (loaded, or built whole), in a child forked from
    it, on ``fd``.

    The child's environment is its own by now, so its options are read again; a build
    made with other app settings is put back and the child builds its own, as a fresh
    process would. ``owner_fd`` is the read end of a pipe only the owner writes to: once
    it reads end of file and no session runs, the instance exits (``--parent-pid`` for
    a forked child). ``ready_fd``, when given, is the write end of a pipe the owner reads:
    one byte once the server listens and its loop runs (then it is closed).
    """
    options = RuntimeOptions.from_env(host="127.0.0.1")
    serving = {"fd": fd, "one_session": one_session, "owner_fd": owner_fd, "ready_fd": ready_fd}
    if not isinstance(prepared, Prebuilt):
        configure_logging(options.log_level)
        serve_loaded(prepared, options, **serving)
        return
    if options.log_level != prepared.options.log_level:
        configure_logging(options.log_level)  # else the parent's holds: stderr is our log
    if not prepared.serves(options):
        prepared.unbuilt.restore(prepared.served.app)
        serve_loaded(prepared.loaded, options, **serving)
        return
    prepared.served.token.set(options.instance_token)
    _serve_built(prepared.loaded, prepared.served, prepared.config, options, **serving)


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
