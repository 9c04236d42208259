"""The queue errors of sage_queue: the queue layer's own classes (sage.utils.errors), so a
QueueClosed from any backend is caught by one except clause."""

from sage.utils.errors import BackendUnavailableError, QueueClosed

__all__ = ["QueueClosed", "BackendUnavailableError"]
