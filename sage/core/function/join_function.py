"""BaseJoinFunction: keyed connected streams joined by the function's own state."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .base_function import BaseFunction

__all__ = ["BaseJoinFunction"]


class BaseJoinFunction(BaseFunction):
    """``execute(payload, key, tag)``: tag is the input (0, 1, ...); returns the items to emit."""

    is_join = True

    @abstractmethod
    def execute(self, payload: Any, key: Any, tag: int) -> list[Any]:
        """Items to pass on (an empty list for none)."""
