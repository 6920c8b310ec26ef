"""Logging as the pipecat-base image does it: loguru on stderr, every line with a session id."""

from __future__ import annotations

import logging
import sys

from loguru import logger

LOG_FORMAT = (
    "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} | "
    "{extra[session_id]} - {message}"
)
NO_SESSION = "NONE"


class _AccessFilter(logging.Filter):
    """The access log keeps only server errors: health probes and Session API requests
    would otherwise store a line each, and any caller with a public key could grow the
    platform's log storage by making requests."""

    def filter(self, record: logging.LogRecord) -> bool:
        status = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        return isinstance(status, int) and status >= 500


class _InterceptHandler(logging.Handler):
    """Sends stdlib logging (uvicorn, aiortc) through loguru, so one format holds."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def configure_logging(level: str) -> None:
    logger.remove()
    logger.configure(extra={"session_id": NO_SESSION})
    if level != "NONE":
        logger.add(sys.stderr, format=LOG_FORMAT, level=level, enqueue=False, backtrace=False)
    handler = _InterceptHandler()
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        std = logging.getLogger(name)
        std.handlers = [handler]
        std.propagate = False
        std.setLevel(logging.INFO)
    logging.getLogger("uvicorn.access").addFilter(_AccessFilter())
