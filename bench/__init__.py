"""cattery benchmarks: ``python -m bench``."""
