"""BaseFunction: what every function class of a pipeline has (SAGE's shape).

A function class is instantiated inside its task, once per parallel instance, with the
arguments given where it was declared; the runtime then sets ``self.ctx``. In process
mode each instance lives in its own process: state it changes stays there.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any

__all__ = ["BaseFunction"]


class BaseFunction(ABC):
    """Base of every function kind. ``__init__`` takes and ignores any arguments, as SAGE's did."""

    ctx = None  # the TaskContext, set by the runtime before the first call

    def __init__(self, *args, **kwargs):  # noqa: B027 - SAGE's subclasses call it with anything
        """Takes and ignores any arguments; subclasses keep theirs."""

    @property
    def name(self) -> str:
        """The operator's name (a subclass may assign its own)."""
        own = self.__dict__.get("_own_name")
        if own is not None:
            return own
        return self.ctx.name if self.ctx is not None else type(self).__name__

    @name.setter
    def name(self, value: str) -> None:
        self.__dict__["_own_name"] = value

    @property
    def logger(self) -> logging.Logger:
        if self.ctx is not None:
            return self.ctx.logger
        return logging.getLogger(f"sage.function.{type(self).__name__}")

    @property
    def call_service(self):
        """``self.call_service["svc"].method(*args, timeout=None, **kwargs)``: a blocking call."""
        return self._context("call_service").call_service

    @property
    def call_service_async(self):
        """``self.call_service_async["svc"].method(...)`` -> a concurrent.futures.Future."""
        return self._context("call_service_async").call_service_async

    def _context(self, what: str):
        if self.ctx is None:
            raise RuntimeError(f"{what} works only inside a running task (the runtime sets self.ctx)")
        return self.ctx

    def finish(self):
        """Called once, when this instance's input has ended (every upstream instance sent
        its end of stream) or its source has: the items it returns (an iterable, or None)
        are passed on before this instance's own end of stream. A place to emit what a
        function accumulated, e.g. final counts."""
        return None

    @abstractmethod
    def execute(self, data: Any) -> Any:
        """Process one item (sources: produce one)."""
