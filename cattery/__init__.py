"""cattery: self-hosted Pipecat Cloud."""

__version__ = "0.1.0"
