"""SourceFunction: called until the job stops, or until it returns a StopSignal."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .base_function import BaseFunction

__all__ = ["SourceFunction", "StopSignal"]


class StopSignal:
    """Returned by a source's ``execute()`` to end its stream (everything before it is delivered)."""

    def __init__(self, name: str = "stop"):
        self.name = name

    def __repr__(self) -> str:
        return f"<StopSignal {self.name}>"


class SourceFunction(BaseFunction):
    """A source: ``execute()`` returns an item, None (nothing this time), or a StopSignal."""

    @abstractmethod
    def execute(self) -> Any:
        """One item, None for none this call, or StopSignal(...) to end the stream."""
