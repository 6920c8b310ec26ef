"""What makes instances: the ``Backend`` interface and its implementations (``local``)."""

from cattery.backends.base import (
    ALLOWED_TRANSITIONS,
    Backend,
    InstanceFailed,
    InstanceHandle,
    InstanceSpec,
    InstanceStartTimeout,
    InstanceStatus,
    LineSink,
    MetricsSink,
)

__all__ = [
    "ALLOWED_TRANSITIONS",
    "Backend",
    "InstanceFailed",
    "InstanceHandle",
    "InstanceSpec",
    "InstanceStartTimeout",
    "InstanceStatus",
    "LineSink",
    "MetricsSink",
]
