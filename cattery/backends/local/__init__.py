"""The local backend: instances are ``cattery runtime`` processes on this machine."""

from cattery.backends.local.handle import LocalInstanceHandle
from cattery.backends.local.process import LocalBackend
from cattery.backends.local.record import AdoptRecord

__all__ = ["AdoptRecord", "LocalBackend", "LocalInstanceHandle"]
