"""Deprecated: use ``from sage_ext.sage_queue.python.sage_queue import SageQueue``."""

from sage_ext._deprecate import deprecated_module

__all__ = ["SageQueue"]  # noqa: F822 (served by __getattr__ below)
__getattr__, __dir__ = deprecated_module(
    __name__, "sage_ext.sage_queue.python.sage_queue", ["SageQueue", "QueueClosed", "QueueStats"]
)
