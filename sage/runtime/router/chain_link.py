"""ChainLink: what an operator emits into when the next operator runs in the same task.

It stands where a Router would: emit() gathers items into a batch and hands it to the
next operator's process() when full and when the task flushes, so a chain keeps the
batch loops of its operators and never queues between them. An exception raised further
down the chain is marked with the operator instance that raised it, so the job's error
names that one, not the chain's head.
"""

from __future__ import annotations

__all__ = ["ChainLink", "raised_in", "mark_raised_in"]

_WHERE = "_sage_raised_in"


def mark_raised_in(exc: BaseException, operator: str, instance: int) -> None:
    """Record the innermost operator instance an exception came from (the first mark wins)."""
    if getattr(exc, _WHERE, None) is None:
        try:
            setattr(exc, _WHERE, (operator, instance))
        except AttributeError:  # an exception type with __slots__: the head is named
            pass


def raised_in(exc: BaseException, default: tuple) -> tuple:
    """(operator, instance) an exception was marked with, else ``default``."""
    return getattr(exc, _WHERE, None) or default


class ChainLink:
    def __init__(self, downstream, operator: str, instance: int, batch_size: int):
        self.downstream = downstream  # the next operator (its process() takes a batch)
        self.operator, self.instance = operator, instance  # the next operator's names
        self.batch_size = batch_size
        self.emitted = 0  # items handed on: the upstream's out, the downstream's in
        self._buffer: list = []

    def emit(self, payload, key=None) -> None:
        buffer = self._buffer
        buffer.append(payload)  # a key only routed; one instance takes everything here
        if len(buffer) >= self.batch_size:
            self._hand_on()

    def _hand_on(self) -> None:
        batch, self._buffer = self._buffer, []
        self.emitted += len(batch)
        try:
            self.downstream.process(batch)
        except BaseException as exc:
            mark_raised_in(exc, self.operator, self.instance)
            raise

    def flush(self) -> None:
        """Hand on what is gathered (the task's input is momentarily empty, or it ends)."""
        if self._buffer:
            self._hand_on()
