"""ChainLink: what an operator emits into when the next operator runs in the same task.

It stands where a Router would. emit() is the list's own append (the per-item path is one
C call); the task hands the gathered items on after each step of the chain's head, and
each link, once its operator has processed them, hands on what that one emitted: a chain
keeps the batch loops of its operators and never queues between them. Operators that may
emit any number of items per input (flatmap, join, finish()) use emit_all(), which hands on
every full batch at once, so memory stays bounded by the batch size as on a queue. An
exception raised further down the chain is marked with the operator instance that raised
it, so the job's error names that one, not the chain's head.
"""

from __future__ import annotations

import itertools

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
    def __init__(self, operator: str, instance: int, batch_size: int):
        self.downstream = None  # the next operator (its process() takes a batch): connect()
        self.next = None  # the link that operator emits into; None: it emits to the router
        self.operator, self.instance = operator, instance  # the next operator's names
        self.batch_size = batch_size
        self.emitted = 0  # items handed on: the upstream's out, the downstream's in
        self._buffer: list = []
        self.emit = self._buffer.append  # one instance downstream: no key, no routing

    def connect(self, downstream, next_link) -> None:
        self.downstream, self.next = downstream, next_link

    def emit_all(self, items) -> None:
        """Emit every item of an iterable (a generator, say), handing on each full batch
        as it fills: never more than a batch is held here."""
        buffer, size = self._buffer, self.batch_size
        iterator = iter(items)
        while True:
            buffer.extend(itertools.islice(iterator, max(0, size - len(buffer))))
            if len(buffer) < size:
                return  # the iterable gave less than there was room for: it has ended
            self.hand_on()

    def hand_on(self) -> None:
        """The next operator processes what is gathered, then passes its own output on."""
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
        if self.next is not None:
            self.next.hand_on()
