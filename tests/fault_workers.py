"""Process entry points and item helpers for the fault-injection tests.

Workers run in forked children that the tests SIGKILL at random moments; they report
progress through shared memory (multiprocessing RawArray), never through a queue, so
what a child reported is exactly what it had finished when it died.
"""

import os
import queue
import struct
import time

from support import items

# -- checksummed, sequence-numbered items (tests/support/items.py), all of producer 0 -----


def item_size(seq, large):
    """Deterministic payload size: mostly small, one in 16 large (a long copy)."""
    h = (seq * 2654435761) & 0xFFFFFFFF
    return large if h % 16 == 5 else h % 1500


def make_item(seq, large=64 * 1024):
    """Three encodings, so raw, pickled and out-of-band records all get killed mid-copy."""
    return items.make_item(0, seq, os.urandom(item_size(seq, large)), items.ENCODINGS[seq % 3])


def check_item(obj):
    """Return the item's sequence number; raise ValueError if it is garbled."""
    return items.check_item(obj)[1]


# -- workers (run in forked children) ----------------------------------------------------


def produce(q, prog, mode, batch_max, limit, large):
    """Put items 0, 1, 2, ... forever (or up to limit).

    prog[0] = 1 once running; prog[2] = last seq of the put in flight, written before
    the call; prog[1] = last seq whose put (or put_many) returned, written right after.
    """
    prog[0] = 1
    seq = 0
    k = 1
    while seq < limit:
        if mode == "put":
            prog[2] = seq
            q.put(make_item(seq, large))
            prog[1] = seq
            seq += 1
        else:
            k = k % batch_max + 1  # batch sizes 1..batch_max in turn
            items = [make_item(s, large) for s in range(seq, seq + k)]
            prog[2] = seq + k - 1
            q.put_many(items)
            prog[1] = seq + k - 1
            seq += k


def consume(q, seqs, times, state, mode, batch, work=0.0):
    """Take items until QueueClosed, recording each seq (and when) once it is handled
    (checked, then `work` seconds of busy "processing").

    state[0] = 1 once running, state[1] = number of seqs recorded, state[2] = garbled items.
    A child killed between get returning and the count update loses that one batch.
    """
    from sage_ext.sage_queue.python.sage_queue import QueueClosed

    state[0] = 1
    n = 0
    while True:
        try:
            got = [q.get(timeout=0.05)] if mode == "get" else q.get_many(batch, timeout=0.05)
        except queue.Empty:
            continue
        except QueueClosed:
            return
        t = time.monotonic()
        while time.monotonic() - t < work:
            pass
        for obj in got:
            try:
                seqs[n] = check_item(obj)
            except ValueError:
                state[2] += 1
                seqs[n] = -1
            times[n] = t
            n += 1
        state[1] = n


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
