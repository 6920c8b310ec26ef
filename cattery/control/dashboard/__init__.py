"""The operators' dashboard at ``/dashboard/``: agents, sessions, logs, keys and secrets,
and a page to talk to an agent over WebRTC with nothing loaded from off this machine."""

from fastapi import FastAPI

from cattery.control.dashboard.auth import LoginRequired, login_required
from cattery.control.dashboard.routes import build_router


def install(app: FastAPI) -> None:
    """The dashboard's routes, and its answer to a request with no login."""
    app.include_router(build_router())
    app.add_exception_handler(LoginRequired, login_required)


__all__ = ["install"]
