"""Compatibility module for bots written for Pipecat Cloud.

``from pipecatcloud_system import app`` gives the FastAPI app the runtime serves, so routes
a bot adds there answer through the Session API.
"""

from cattery.runtime.system import add_lifespan_to_app, get_app

app = get_app()

__all__ = ["add_lifespan_to_app", "app"]
