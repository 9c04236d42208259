"""MapFunction: one item in, one item out (a None result is not passed on)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .base_function import BaseFunction

__all__ = ["MapFunction"]


class MapFunction(BaseFunction):
    @abstractmethod
    def execute(self, data: Any) -> Any:
        """The item to pass on; None passes nothing."""
