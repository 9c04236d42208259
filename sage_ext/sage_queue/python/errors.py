"""Errors shared by every queue backend (pure Python: importable without the native build)."""

import queue

__all__ = ["QueueClosed"]


class QueueClosed(getattr(queue, "ShutDown", Exception)):
    """The queue was closed: put() always raises it, get() once the queue is empty.

    On Python 3.13+ it is a queue.ShutDown, so code written for the stdlib catches it.
    """
