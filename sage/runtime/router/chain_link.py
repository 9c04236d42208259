"""ChainLink: what an operator emits into when the next operator runs in the same task.

It stands where a Router would. emit() is the list's own append (the per-item path is one
C call); the task hands the gathered items to the next operator's process() after each
step of the chain's head, so a chain keeps the batch loops of its operators and never
queues between them. Operators that may emit without bound per input item (flatmap, join)
call spill() after each one, which hands on a full batch at once. An exception raised
further down the chain is marked with the operator instance that raised it, so the job's
error names that one, not the chain's head.
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
        self.emit = self._buffer.append  # one instance downstream: no key, no routing

    def spill(self) -> None:
        """Hand on a full batch now (a fan-out operator, after each input item)."""
        if len(self._buffer) >= self.batch_size:
            self.hand_on()

    def hand_on(self) -> None:
        """The next operator processes what is gathered."""
        buffer = self._buffer
        if not buffer:
            return
        self.emitted += len(buffer)
        try:
            self.downstream.process(buffer)
        except BaseException as exc:
            mark_raised_in(exc, self.operator, self.instance)
            raise
        buffer.clear()  # the same list: emit is its bound append
