"""ssmbench: an experiment runner for how state space models are initialized and trained."""

__version__ = "0.1.0"
