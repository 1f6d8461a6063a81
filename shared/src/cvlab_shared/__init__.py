"""cvlab-shared: the core the cvlab paper packages build on (data, metrics, evaluation, CLI, logging)."""

__version__ = "0.1.0"
