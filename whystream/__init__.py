"""whystream: explain a live stream of model decisions."""

__version__ = "0.1.0"
