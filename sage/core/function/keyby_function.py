"""KeyByFunction: the partition key of an item (hashed stably: same key, same instance)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable
from typing import Any

from .base_function import BaseFunction

__all__ = ["KeyByFunction"]


class KeyByFunction(BaseFunction):
    @abstractmethod
    def execute(self, data: Any) -> Hashable:
        """The item's key."""
