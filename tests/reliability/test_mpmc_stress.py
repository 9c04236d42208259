"""MPMC stress: 4 producer and 4 consumer processes move 1,000,000 checksummed items through
one small ring (it wraps and fills all the time). Half the producers use put_many, half put;
half the consumers get_many, half get. Every item carries its producer, its sequence number
and a CRC-32 over both and its payload (tests/support/items.py, raw bytes); the roles are
tests/support/roles.py's. At the end every item must have been received exactly once, and
each consumer must have seen each producer's items in sequence order.
"""

import itertools
import multiprocessing as mp
import os
import random
import time
import uuid

import pytest
from support import items, roles

from conftest import requires_native, segment_file

pytestmark = [requires_native, pytest.mark.stress, pytest.mark.slow, pytest.mark.timeout(300)]

fork = mp.get_context("fork")

PRODUCERS, CONSUMERS, PER_PRODUCER = 4, 4, 250_000
PAYLOADS = [random.Random(i).randbytes(i % 49) for i in range(997)]


def encode(producer, seq):
    return items.make_item(producer, seq, PAYLOADS[(seq * 31 + producer) % len(PAYLOADS)])  # raw bytes


def produce(q, progress, producer, batched, start):
    start.wait(30)
    rng = random.Random(producer)
    sizes = iter(lambda: rng.randint(1, 64), None) if batched else itertools.repeat(1)  # batches of 1..64, or 1
    roles.Producer(q, producer, progress, encode).run(sizes, PER_PRODUCER, many=batched, timeout=60)


def test_four_producers_and_four_consumers_move_a_million_checksummed_items_exactly_once_in_order():
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue(f"mpmc-{uuid.uuid4().hex[:16]}", capacity_bytes=64 * 1024)
    progress, tally = roles.Progress(PRODUCERS), roles.Tally(CONSUMERS, PRODUCERS, PER_PRODUCER)
    start = fork.Event()
    procs = []
    try:
        for p in range(PRODUCERS):
            procs.append(fork.Process(target=produce, args=(q, progress, p, p % 2 == 0, start), daemon=True))
        for c in range(CONSUMERS):
            batched = c % 2 == 0
            # A consumer that waits 60 s for nothing has found a stall: Empty ends it, with an error.
            procs.append(fork.Process(target=roles.consume, args=(q, tally, c, 64 if batched else 1, batched, 60),
                                      kwargs=dict(empty_is_error=True), daemon=True))
        for p in procs:
            p.start()
        t0 = time.monotonic()
        start.set()
        for p in procs[:PRODUCERS]:
            p.join(240)
            assert p.exitcode == 0, f"producer {p.name} failed (exit {p.exitcode})"
        q.close()  # consumers drain what is left, then see QueueClosed
        for p in procs[PRODUCERS:]:
            p.join(120)
            assert p.exitcode == 0, f"consumer {p.name} did not finish draining (exit {p.exitcode})"
        elapsed = time.monotonic() - t0
        stats = q.stats()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        q.destroy()
    assert not os.path.exists(segment_file(q.name))

    garbled = sum(tally.garbled)
    assert not garbled, f"{garbled} items failed their checksum, the first: {tally.first_garbled()}"
    total = PRODUCERS * PER_PRODUCER
    assert [progress.returned(p) for p in range(PRODUCERS)] == [PER_PRODUCER - 1] * PRODUCERS
    delivered = tally.delivered()
    if delivered != [1] * total:
        which = lambda n: [divmod(i, PER_PRODUCER) for i, k in enumerate(delivered) if n(k)][:10]
        pytest.fail(f"received {sum(delivered)} of {total} items; lost (producer, seq): {which(lambda k: k == 0)}; "
                    f"duplicated: {which(lambda k: k > 1)}")
    for c in range(CONSUMERS):
        assert tally.out_of_order[c] == 0, f"consumer {c} got {tally.out_of_order[c]} items out of their producer's order"
    per_consumer = list(tally.recorded)
    assert all(n > 0 for n in per_consumer), "a consumer got nothing: the test did not exercise MPMC"
    assert (stats.puts, stats.gets, stats.items) == (total, total, 0)
    assert (stats.abandoned_records, stats.reclaimed_records, stats.lock_recoveries) == (0, 0, 0)
    print(f"{total} items in {elapsed:.1f} s ({total / elapsed / 1e3:.0f} k items/s); per consumer: {per_consumer}")
