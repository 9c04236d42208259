"""Process entry points and item helpers for the fault-injection tests.

Workers run in forked children that the tests SIGKILL at random moments; they report
progress through shared memory (multiprocessing RawArray), never through a queue, so
what a child reported is exactly what it had finished when it died.
"""

import itertools
import random
import struct
import time

from support import items, roles

# -- the items of the producer tests: checksummed and numbered (tests/support/items.py) --------


def item_size(seq, large):
    """Deterministic payload size: mostly small, one in 16 large (a long copy)."""
    h = (seq * 2654435761) & 0xFFFFFFFF
    return large if h % 16 == 5 else h % 1500


def item_maker(large=64 * 1024):
    """make_item(producer, seq) for roles.Producer: three encodings in turn, so raw, pickled
    and out-of-band records all get killed mid-copy."""
    rng = random.Random()  # seeded afresh in each process that calls this

    def make_item(producer, seq):
        return items.make_item(producer, seq, items.payload(item_size(seq, large), rng), items.ENCODINGS[seq % 3])

    return make_item


# -- workers (run in forked children) ----------------------------------------------------


def produce(q, progress, mode, batch_max, limit, large):
    """Producer 0 of ``progress``: items 0, 1, 2, ... up to ``limit``, one put() each (mode
    "put") or one put_many() of 2, 3, ..., batch_max, 1, 2, ... items in turn."""
    if mode == "put":
        sizes, many = itertools.repeat(1), False
    else:
        sizes, many = itertools.islice(itertools.cycle(range(1, batch_max + 1)), 1, None), True
    roles.Producer(q, 0, progress, item_maker(large)).run(sizes, limit, many)


def churn(q, prog, batch):
    """Tight loop of tiny put_many/get_many: most of its time is spent near the lock.

    prog[1] = last seq put (after put_many returned), prog[2] = next seq expected from get
    (after get_many returned and every item checked), prog[3] = out-of-order/garbled items.
    """
    prog[0] = 1
    seq = prog[1] + 1
    pack = struct.Struct("<Q").pack
    while True:
        q.put_many([pack(s) for s in range(seq, seq + batch)])
        seq += batch
        prog[1] = seq - 1
        got = q.get_many(batch, timeout=5)
        expect = prog[2]
        for obj in got:
            if obj != pack(expect):
                prog[3] += 1
            expect += 1
        prog[2] = expect


def put_one(q, item, started):
    started.value = 1
    q.put(item)


def put_batch(q, items, started):
    started.value = 1
    q.put_many(items)


def get_one(q, started):
    started.value = 1
    q.get(timeout=30)


def take_without_task_done(q, count, taken):
    for _ in range(count):
        q.get(timeout=10)
        taken.value += 1
    time.sleep(60)  # hold the unfinished tasks until killed


def wait_and_report(q, op, started, result):
    """Block in get() or put() until close(); result = [monotonic time, 1 if QueueClosed]."""
    from sage_ext.sage_queue.python.sage_queue import QueueClosed

    started.value = 1
    try:
        if op == "get":
            q.get()
        else:
            q.put("blocked", timeout=30)
        result[1] = 0
    except QueueClosed:
        result[1] = 1
    except BaseException:
        result[1] = -1
    result[0] = time.monotonic()


def attach_put_and_exit(name, item):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue.open(name)
    q.put(item)  # exits normally without detaching explicitly
