"""The container backend: instances are containers of an agent's image (Docker Engine API)."""

from cattery.backends.container.backend import ContainerBackend
from cattery.backends.container.engine import (
    BuildFailed,
    Engine,
    ImageNotFoundError,
    build_image,
    check_reference,
)
from cattery.backends.container.handle import ContainerInstanceHandle

__all__ = [
    "BuildFailed",
    "ContainerBackend",
    "ContainerInstanceHandle",
    "Engine",
    "ImageNotFoundError",
    "build_image",
    "check_reference",
]
