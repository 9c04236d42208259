"""BatchFunction: a finite source. ``execute()`` returns the next item; ``None`` ends the stream."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .base_function import BaseFunction

__all__ = ["BatchFunction"]


class BatchFunction(BaseFunction):
    """A source that ends by itself: the stream ends when ``execute()`` returns None."""

    @abstractmethod
    def execute(self) -> Any:
        """The next item, or None when there are no more."""
