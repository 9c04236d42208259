"""Producer and consumer roles of the fault, crash and stress tests, over the items of
support/items.py.

What a role has finished is published in shared memory (RawArray), never sent through a
queue, so a test reads exactly how far a role had got when it was killed:
  - Progress, per producer: the last seq handed to a put (written before the call) and the
    last seq whose put returned (written right after it);
  - Tally, per consumer: how many times it recorded each (producer, seq), the highest seq it
    recorded per producer, the items that came out of their producer's order, garbled items.
A Producer puts its items in seq order, one put() or put_many() a batch; consume() takes
items until QueueClosed and records each in a Tally. Both run in forked children (which
inherit the arrays) or in threads.
"""

from __future__ import annotations

import queue
import time
from multiprocessing.sharedctypes import RawArray

from support import items

__all__ = ["Producer", "Progress", "Tally", "consume", "take"]


class Progress:
    """Per producer, how far its puts got: handed(p), the last seq handed to a put (in flight
    or done), and returned(p), the last seq whose put returned; -1 before the first."""

    def __init__(self, producers: int):
        self.producers = producers
        self._seqs = RawArray("q", [-1] * (2 * producers))  # [2p] handed, [2p + 1] returned

    def handed(self, p: int) -> int:
        return self._seqs[2 * p]

    def returned(self, p: int) -> int:
        return self._seqs[2 * p + 1]

    def begin(self, p: int, last: int) -> None:
        self._seqs[2 * p] = max(self._seqs[2 * p], last)  # a retry after Full hands fewer

    def end(self, p: int, last: int) -> None:
        self._seqs[2 * p + 1] = last

    def next_seq(self, p: int) -> int:
        """Where producer p's next process goes on: past everything handed to a put, since
        a dead predecessor's in-flight items may still be delivered."""
        return max(self.handed(p), self.returned(p)) + 1


class Producer:
    """Producer ``index`` of ``progress``: puts its items in seq order, going on where the
    last process of its role got to. make_item(index, seq) makes the item of a seq."""

    def __init__(self, q, index: int, progress: Progress, make_item=None):
        self.q, self.index, self.progress, self.make_item = q, index, progress, make_item
        self.seq = progress.next_seq(index)

    def items(self, count: int) -> list:
        """The items of the next ``count`` seqs."""
        return [self.make_item(self.index, s) for s in range(self.seq, self.seq + count)]

    def put(self, batch: list, many: bool | None = None, timeout: float | None = None) -> None:
        """Put ``batch``, the items of the next seqs: one put_many() if ``many`` (default: more
        than one item), else one put(). Raises what the queue raises; after queue.Full
        nothing was put and the same seqs go again."""
        last = self.seq + len(batch) - 1
        self.progress.begin(self.index, last)
        if len(batch) > 1 if many is None else many:
            self.q.put_many(batch, timeout=timeout)
        else:
            self.q.put(batch[0], timeout=timeout)
        self.progress.end(self.index, last)
        self.seq = last + 1

    def run(self, sizes, limit: int, many: bool | None = None, timeout: float | None = None) -> None:
        """Put batches of the sizes ``sizes`` yields, until seq ``limit`` (excluded)."""
        for size in sizes:
            if self.seq >= limit:
                return
            self.put(self.items(min(size, limit - self.seq)), many, timeout)


def take(q, count: int, many: bool, timeout: float | None) -> list:
    """One get_many(count) if ``many``, else one get(), as a list."""
    return q.get_many(count, timeout=timeout) if many else [q.get(timeout=timeout)]


class Tally:
    """What consumers 0 .. consumers-1 recorded of producers' items with seqs below max_seq.

    counts[c][p * max_seq + seq]: how many times consumer c recorded that item (at most 255);
    recorded[c]: items it recorded (intact or not); garbled[c]: those that failed
    check_item() or were not of a producer and seq counted here; out_of_order[c]: intact
    items whose seq was not above the highest it had recorded of their producer.
    """

    def __init__(self, consumers: int, producers: int, max_seq: int):
        self.consumers, self.producers, self.max_seq = consumers, producers, max_seq
        self.counts = [RawArray("B", producers * max_seq) for _ in range(consumers)]
        self._highest = RawArray("q", [-1] * (consumers * producers))
        self.recorded = RawArray("q", consumers)
        self.garbled = RawArray("q", consumers)
        self.out_of_order = RawArray("q", consumers)
        self._first_garbled = RawArray("c", 512)

    def record(self, c: int, got) -> None:
        """Check and record what consumer c got."""
        P, N, counts = self.producers, self.max_seq, self.counts[c]
        for obj in got:
            try:
                p, s = items.check_item(obj)
                if p >= P or s >= N:
                    raise ValueError(f"item {p}:{s} is not of the {P} producers' first {N} seqs")
            except ValueError as e:
                self.garbled[c] += 1
                if not self._first_garbled.value:
                    self._first_garbled.value = str(e).encode(errors="replace")[:500]
                continue
            i = p * N + s
            counts[i] = min(counts[i] + 1, 255)
            h = c * P + p
            if s <= self._highest[h]:
                self.out_of_order[c] += 1
            else:
                self._highest[h] = s
        self.recorded[c] += len(got)

    def highest(self, c: int, p: int) -> int:
        """The highest seq of producer p consumer c recorded, -1 if none."""
        return self._highest[c * self.producers + p]

    def highest_anywhere(self, p: int) -> int:
        return max(self.highest(c, p) for c in range(self.consumers))

    def first_garbled(self) -> str:
        """What was wrong with the first garbled item, "" if none was."""
        return self._first_garbled.value.decode(errors="replace")

    def delivered(self) -> list:
        """Per item (index p * max_seq + seq): how many times any consumer recorded it."""
        return [sum(n) for n in zip(*(bytes(a) for a in self.counts), strict=True)]


def consume(q, tally: Tally, c: int, count: int = 1, many: bool = False, timeout: float = 0.05,
            work: float = 0.0, times=None, empty_is_error: bool = False) -> None:
    """Consumer c of ``tally``: takes items (see take()) until QueueClosed and records them.

    queue.Empty means take again, unless ``empty_is_error`` (a consumer that waited
    ``timeout`` for nothing has found a stall: Empty propagates). ``work``: seconds of busy
    "processing" between a take and its record, so a kill lands there and loses the batch.
    times[i], if given: when the i-th recorded item was taken.
    """
    from sage_ext.sage_queue.python.sage_queue import QueueClosed

    while True:
        try:
            got = take(q, count, many, timeout)
        except queue.Empty:
            if empty_is_error:
                raise
            continue
        except QueueClosed:
            return
        t = time.monotonic()
        while time.monotonic() - t < work:
            pass
        if times is not None:
            n = tally.recorded[c]
            for i in range(len(got)):
                times[n + i] = t
        tally.record(c, got)
