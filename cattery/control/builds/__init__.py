"""Builds: ``pipecat cloud deploy`` with no image uploads its context and deploys the
build's result."""

from cattery.control.builds.service import STATUSES, BuildService

__all__ = ["STATUSES", "BuildService"]
