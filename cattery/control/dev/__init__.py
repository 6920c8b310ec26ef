"""``cattery dev``: Pipecat's development runner's routes on top of the control plane.

The routes a bot developer's tools expect from ``python bot.py`` (``POST /start``,
``/sessions/{id}/{path}``, ``/api/offer``, ``/status`` and the prebuilt client at
``/client``) start and reach sessions of one agent (``settings.dev.agent``) through the
same start path, pools and supervisor as the public API. They need no key: dev mode is
meant for loopback, as Pipecat's runner is.
"""

from cattery.control.dev.routes import build_router

__all__ = ["build_router"]
