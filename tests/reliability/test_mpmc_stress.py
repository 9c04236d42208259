"""MPMC stress: 4 producer and 4 consumer processes move 1,000,000 checksummed items through
one small ring (it wraps and fills all the time). Half the producers use put_many, half put;
half the consumers get_many, half get. Every item carries its producer, its sequence number
and a CRC-32 over both and its payload (tests/support/items.py, raw bytes). At the end the multiset received must equal the
multiset sent, and each consumer must have seen each producer's items in sequence order.
"""

import itertools
import multiprocessing as mp
import os
import random
import time
import uuid
from array import array

import pytest
from support import items

from conftest import requires_native, segment_file

pytestmark = [requires_native, pytest.mark.slow, pytest.mark.timeout(300)]

fork = mp.get_context("fork")

PRODUCERS, CONSUMERS, PER_PRODUCER = 4, 4, 250_000
SEQ_BITS = 20  # a received item is recorded as producer << SEQ_BITS | sequence in an array('I')
assert PER_PRODUCER < 1 << SEQ_BITS
PAYLOADS = [random.Random(i).randbytes(i % 49) for i in range(997)]


def encode(producer, seq):
    return items.make_item(producer, seq, PAYLOADS[(seq * 31 + producer) % len(PAYLOADS)])  # raw bytes


def produce(q, producer, batched, start):
    start.wait(30)
    rng = random.Random(producer)
    seq = 0
    while seq < PER_PRODUCER:
        if batched:
            n = min(rng.randint(1, 64), PER_PRODUCER - seq)
            q.put_many([encode(producer, s) for s in range(seq, seq + n)], timeout=60)
            seq += n
        else:
            q.put(encode(producer, seq), timeout=60)
            seq += 1


def consume(q, batched, out):
    from sage_ext.sage_queue.python.sage_queue import QueueClosed

    got, bad = array("I"), []
    try:
        while True:
            got_now = q.get_many(64, timeout=60) if batched else [q.get(timeout=60)]
            for item in got_now:
                try:
                    producer, seq = items.check_item(item)
                except ValueError:
                    bad.append(item[:80])
                    producer, seq = items.RAW_HEADER.unpack_from(item)[:2]
                got.append(producer << SEQ_BITS | seq)
    except QueueClosed:
        pass
    out.send((got.tobytes(), bad[:10], len(bad)))
    out.close()


def test_four_producers_and_four_consumers_move_a_million_checksummed_items_exactly_once_in_order():
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue(f"mpmc-{uuid.uuid4().hex[:16]}", capacity_bytes=64 * 1024)
    start = fork.Event()
    procs, pipes = [], []
    try:
        for p in range(PRODUCERS):
            procs.append(fork.Process(target=produce, args=(q, p, p % 2 == 0, start), daemon=True))
        for c in range(CONSUMERS):
            recv, send = fork.Pipe(duplex=False)
            procs.append(fork.Process(target=consume, args=(q, c % 2 == 0, send), daemon=True))
            pipes.append(recv)
        for p in procs:
            p.start()
        t0 = time.monotonic()
        start.set()
        for p in procs[:PRODUCERS]:
            p.join(240)
            assert p.exitcode == 0, f"producer {p.name} failed (exit {p.exitcode})"
        q.close()  # consumers drain what is left, then see QueueClosed
        results = []
        for recv in pipes:
            assert recv.poll(120), "a consumer did not finish draining"
            results.append(recv.recv())
        for p in procs[PRODUCERS:]:
            p.join(30)
            assert p.exitcode == 0, f"consumer {p.name} failed (exit {p.exitcode})"
        elapsed = time.monotonic() - t0
        stats = q.stats()
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        q.destroy()
    assert not os.path.exists(segment_file(q.name))

    bad = [(n, first) for _, first, n in results if n]
    assert not bad, f"items failed their checksum: {bad}"
    per_consumer = []
    for raw, _, _ in results:
        got = array("I")
        got.frombytes(raw)
        per_consumer.append(got)
    total = PRODUCERS * PER_PRODUCER
    received = sorted(code for got in per_consumer for code in got)
    if received != [p << SEQ_BITS | s for p in range(PRODUCERS) for s in range(PER_PRODUCER)]:
        sent = {p << SEQ_BITS | s for p in range(PRODUCERS) for s in range(PER_PRODUCER)}
        seen = set(received)
        lost = sorted(sent - seen)[:10]
        dups = sorted(c for c, n in itertools.pairwise(received) if c == n)[:10]
        pytest.fail(f"received {len(received)} of {total} items; lost (producer, seq): "
                    f"{[(c >> SEQ_BITS, c & (1 << SEQ_BITS) - 1) for c in lost]}; duplicated: "
                    f"{[(c >> SEQ_BITS, c & (1 << SEQ_BITS) - 1) for c in dups]}")
    for c, got in enumerate(per_consumer):
        last = [-1] * PRODUCERS
        for code in got:
            p, s = code >> SEQ_BITS, code & (1 << SEQ_BITS) - 1
            assert s > last[p], f"consumer {c} got producer {p}'s item {s} after its item {last[p]}"
            last[p] = s
    assert all(len(got) > 0 for got in per_consumer), "a consumer got nothing: the test did not exercise MPMC"
    assert (stats.puts, stats.gets, stats.items) == (total, total, 0)
    assert (stats.abandoned_records, stats.reclaimed_records, stats.lock_recoveries) == (0, 0, 0)
    print(f"{total} items in {elapsed:.1f} s ({total / elapsed / 1e3:.0f} k items/s); per consumer: "
          f"{[len(g) for g in per_consumer]}")
