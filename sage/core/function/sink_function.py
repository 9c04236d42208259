"""SinkFunction: the end of a stream; whatever ``execute()`` returns is dropped."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .base_function import BaseFunction

__all__ = ["SinkFunction"]


class SinkFunction(BaseFunction):
    @abstractmethod
    def execute(self, data: Any) -> None:
        """Consume one item."""
