"""The crash harness's workers (harness.py): forked producers and consumers
(tests/support/roles.py) that publish, before each call, what they are doing, so the killer
reads after a death what the victim was in the middle of.

Workers report through shared memory (Shared: RawArrays), never through a queue, so what the
harness reads is exactly what a worker had finished when it died:
  - per producer (roles.Progress): last seq handed to a put and last seq whose put returned;
  - per consumer: how many items it is taking (written before get, cleared once the items
    are recorded), and (roles.Tally) a count per (producer, seq) written right after get
    returns and the highest seq recorded per producer.
"""

from __future__ import annotations

import os
import queue
import random
import time
from multiprocessing.sharedctypes import RawArray

from support import items, roles

from sage_ext.sage_queue.python.sage_queue import QueueClosed

__all__ = ["OTHER", "PHASES", "START", "Shared", "role_name", "spawn"]

# What a worker was doing, published before each call: read after its death.
PHASES = ("other", "start", "put", "put_many", "get", "get_many", "task_done")
OTHER, START, PUT, PUT_MANY, GET, GET_MANY, TASK_DONE = range(len(PHASES))

PUT_TIMEOUTS = (None, None, 0.05, 0.01)
GET_TIMEOUTS = (None, 0.05, 0.01, 0.0)


class Shared:
    """Everything the workers publish and the killer reads, for one run's Config."""

    def __init__(self, cfg):
        P, C = cfg.producers, cfg.consumers
        W = P + C

        def q(n, init=0):
            return RawArray("q", [init] * n)

        self.epoch = q(1)  # number of kills so far, published right after each kill
        self.stop = q(1)  # producers: finish the current put and leave
        self.progress = roles.Progress(P)
        self.taking = q(C)  # items asked for and not yet recorded
        self.take_lo = q(C * P, -1)  # [c*P+p] highest seq of p recorded by anyone before c's get
        self.tally = roles.Tally(C + 1, P, cfg.max_seq)  # consumer C: the final drain
        self.phase = q(W)
        self.ack_epoch = q(W)  # last kill after which the worker began and completed an operation
        self.ack_time = RawArray("d", W)
        self.started = RawArray("d", W)  # when the current process of each role began
        self.slotless = q(W)
        self.errors = q(1)
        self.errmsg = RawArray("c", 2048)


def _ack(sh, role, epoch):
    if epoch > sh.ack_epoch[role]:
        sh.ack_time[role] = time.monotonic()
        sh.ack_epoch[role] = epoch


def _record_error(sh, text):
    sh.errors[0] += 1
    if not sh.errmsg.value:
        sh.errmsg.value = text.encode(errors="replace")[:2000]


def _item_size(rng, cfg):
    r = rng.random()
    if r < cfg.large_fraction:
        return rng.randint(64 << 10, cfg.max_item_bytes)
    if r < cfg.large_fraction + cfg.medium_fraction:
        return rng.randint(2 << 10, 64 << 10)
    return rng.randint(0, 2048)


def _make_item(p, s, size, rng):
    """Raw bytes, an in-band pickle or a pickle with an out-of-band part, at random."""
    return items.make_item(p, s, items.payload(size, rng), items.ENCODINGS[rng.randrange(3)])


def _produce(q, sh, cfg, p, role, rng):
    producer = roles.Producer(q, p, sh.progress)
    limit = cfg.capacity_bytes // 4
    while not sh.stop[0]:
        if producer.seq + cfg.max_batch >= cfg.max_seq:
            time.sleep(0.01)
            continue
        many = rng.random() < 0.5
        n = rng.randint(2, cfg.max_batch) if many else 1
        batch, total = [], 0
        for s in range(producer.seq, producer.seq + n):
            size = _item_size(rng, cfg)
            if batch and total + size > limit:
                break
            batch.append(_make_item(p, s, size, rng))
            total += size
        timeout = rng.choice(PUT_TIMEOUTS)
        epoch = sh.epoch[0]
        sh.phase[role] = PUT_MANY if many else PUT
        try:
            producer.put(batch, many, timeout)
        except queue.Full:  # nothing was put: the same seqs go again
            sh.phase[role] = OTHER
            continue
        except QueueClosed:
            return
        sh.phase[role] = OTHER
        _ack(sh, role, epoch)


def _consume(q, sh, cfg, c, role, rng):
    P, tally = cfg.producers, sh.tally
    while True:
        k = rng.randint(2, 2 * cfg.max_batch) if rng.random() < 0.5 else 1
        timeout = rng.choice(GET_TIMEOUTS)
        for p in range(P):  # what anyone recorded was claimed before anything this get claims
            sh.take_lo[c * P + p] = tally.highest_anywhere(p)
        sh.taking[c] = k
        epoch = sh.epoch[0]
        sh.phase[role] = GET_MANY if k > 1 else GET
        try:
            got = roles.take(q, k, k > 1, timeout)
        except queue.Empty:
            sh.taking[c] = 0
            sh.phase[role] = OTHER
            # Empty is an answer only when there is nothing to take: Empty while records wait
            # behind a dead producer's reservation is the stall this harness measures.
            if q.qsize() == 0:
                _ack(sh, role, epoch)
            continue
        except QueueClosed:
            sh.taking[c] = 0
            return
        except Exception as e:  # noqa: BLE001 - an item that does not unpickle is a garbled one
            tally.garbled[c] += 1
            _record_error(sh, f"consumer {c}: get raised {type(e).__name__}: {e}")
            sh.taking[c] = 0
            continue
        sh.phase[role] = OTHER
        tally.record(c, got)
        sh.taking[c] = 0
        _ack(sh, role, epoch)
        sh.phase[role] = TASK_DONE
        for _ in got:
            q.task_done()
        sh.phase[role] = OTHER


def _worker(q, sh, cfg, role, seed):
    code = 0
    try:
        sh.started[role] = time.monotonic()
        sh.phase[role] = START
        rng = random.Random(seed)
        if os.getpid() not in {pid for pid, _ in q.info()["attached"]}:
            sh.slotless[role] += 1  # the fork hook found the slot table full
        sh.phase[role] = OTHER
        if role < cfg.producers:
            _produce(q, sh, cfg, role, role, rng)
        else:
            _consume(q, sh, cfg, role - cfg.producers, role, rng)
        q.detach()
    except BaseException as e:  # noqa: BLE001 - reported to the parent, never raised past fork
        _record_error(sh, f"{role_name(cfg, role)}: {type(e).__name__}: {e}")
        code = 3
    finally:
        os._exit(code)


def role_name(cfg, role):
    return f"producer {role}" if role < cfg.producers else f"consumer {role - cfg.producers}"


def spawn(q, sh, cfg, role, seed):
    """Fork the worker of ``role`` (producers first, then consumers): its pid."""
    sh.phase[role] = START
    pid = os.fork()
    if pid == 0:
        _worker(q, sh, cfg, role, seed)  # never returns
    return pid
