"""The container backend: instances are containers of an agent's image (Docker Engine API)."""

from cattery.backends.container.backend import ContainerBackend
from cattery.backends.container.engine import Engine
from cattery.backends.container.handle import ContainerInstanceHandle

__all__ = ["ContainerBackend", "ContainerInstanceHandle", "Engine"]
