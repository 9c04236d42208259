"""FilterFunction: items for which ``execute()`` is true pass on unchanged."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .base_function import BaseFunction

__all__ = ["FilterFunction"]


class FilterFunction(BaseFunction):
    @abstractmethod
    def execute(self, data: Any) -> bool:
        """True keeps the item."""
