"""The local backend: instances are ``cattery runtime`` processes on this machine."""

from cattery.backends.local.handle import LocalInstanceHandle
from cattery.backends.local.logtail import LogTail
from cattery.backends.local.process import LocalBackend
from cattery.backends.local.record import AdoptRecord
from cattery.backends.local.venvs import (
    EnvironmentBuildFailed,
    build_environment,
    dependency_source,
)

__all__ = [
    "AdoptRecord",
    "EnvironmentBuildFailed",
    "LocalBackend",
    "LocalInstanceHandle",
    "LogTail",
    "build_environment",
    "dependency_source",
]
