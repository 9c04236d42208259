"""The queue layer's errors, raised by every backend (pure Python: no native build needed)."""

import queue

__all__ = ["QueueClosed", "BackendUnavailableError"]


class QueueClosed(getattr(queue, "ShutDown", Exception)):
    """The queue was closed: put() always raises it, get() once the queue is empty.

    On Python 3.13+ it is a queue.ShutDown, so code written for the stdlib catches it.
    """


class BackendUnavailableError(RuntimeError):
    """A queue backend was asked for by name but is not installed here."""
