"""FlatMapFunction: one item in, any number out (return an iterable, or ``self.collect(x)``)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any

from .base_function import BaseFunction

__all__ = ["FlatMapFunction"]


class FlatMapFunction(BaseFunction):
    def collect(self, data: Any) -> None:
        """Emit one item (passed on after ``execute()`` returns, in the order collected)."""
        self.__dict__.setdefault("_collected", []).append(data)

    def take_collected(self) -> list:
        """What collect() gathered since the last call (the runtime calls this)."""
        return self.__dict__.pop("_collected", None) or []

    @abstractmethod
    def execute(self, data: Any) -> Iterable[Any] | None:
        """An iterable of items to pass on, or None (having used collect())."""
