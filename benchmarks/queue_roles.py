"""The competitors of benchmarks/queue_bench.py and the roles their workers play.

A Channel wraps one kind of queue (sage_queue, multiprocessing.Queue / SimpleQueue / Pipe,
faster-fifo, queue.Queue) behind the few calls the roles need; the roles (produce, consume,
ping, echo) are top-level functions so the spawn start method can pickle them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import queue
import time
from collections.abc import Callable

KiB = 1024
MiB = 1024 * KiB
SMALL_DICT_POOL = 1024  # distinct dicts cycled through: the producer builds none per item
FOREVER_S = 3600.0  # faster-fifo cannot block forever and defaults to 10 s
PING_WARMUP = 200  # round trips before latency samples are kept
_names = itertools.count()


# -- payloads ------------------------------------------------------------------

PAYLOAD_BYTES = {"dict": None, "1k": KiB, "64k": 64 * KiB, "1m": MiB}


def payload_pool(payload: str) -> list:
    """The items a producer cycles through (a power-of-two count), built before the clock."""
    size = PAYLOAD_BYTES[payload]
    if size is None:
        return [{"id": i, "ts": 1.5, "tag": "abc", "vals": [1, 2, 3]}
                for i in range(SMALL_DICT_POOL)]
    return [b"x" * size]


# -- competitors ---------------------------------------------------------------

class Channel:
    """One direction of one competitor's queue, handed to workers as an argument.

    Workers fetch the put/get callables once, so the measured loop calls the
    competitor's own method with nothing of ours in between.
    """

    batches = False  # has native put_many/get_many

    def put_fn(self) -> Callable:
        raise NotImplementedError

    def get_fn(self) -> Callable:
        raise NotImplementedError

    def put_many_fn(self) -> Callable:
        raise NotImplementedError

    def get_many_fn(self, max_items: int) -> Callable:
        raise NotImplementedError

    def detach(self) -> None:
        """Release this process's handle: a worker process, once done."""

    def destroy(self) -> None:
        """Free the queue: the parent, after the run."""


class SageChannel(Channel):
    batches = True

    def __init__(self, ctx, capacity_bytes: int):
        # Imported here so a broken native build shows as failed sage_queue cells.
        from sage_ext.sage_queue.python.sage_queue import SageQueue

        name = f"bench.{os.getpid()}.{next(_names)}"
        self.queue = SageQueue.create(name, capacity_bytes=capacity_bytes)

    def put_fn(self):
        return self.queue.put

    def get_fn(self):
        return self.queue.get

    def put_many_fn(self):
        return self.queue.put_many

    def get_many_fn(self, max_items):
        return functools.partial(self.queue.get_many, max_items)

    def detach(self):
        self.queue.detach()

    def destroy(self):
        self.queue.destroy()


class MPQueueChannel(Channel):
    def __init__(self, ctx, capacity_bytes):
        self.queue = ctx.Queue()

    def put_fn(self):
        return self.queue.put

    def get_fn(self):
        return self.queue.get

    def destroy(self):
        self.queue.close()


class MPSimpleQueueChannel(Channel):
    def __init__(self, ctx, capacity_bytes):
        self.queue = ctx.SimpleQueue()

    def put_fn(self):
        return self.queue.put

    def get_fn(self):
        return self.queue.get

    def destroy(self):
        self.queue.close()


class MPPipeChannel(Channel):
    def __init__(self, ctx, capacity_bytes):
        # One way only: a plain pipe, cheaper than the socketpair of a duplex Pipe.
        self.reader, self.writer = ctx.Pipe(duplex=False)

    def put_fn(self):
        return self.writer.send

    def get_fn(self):
        return self.reader.recv

    def destroy(self):
        self.reader.close()
        self.writer.close()


class FasterFifoChannel(Channel):
    batches = True

    def __init__(self, ctx, capacity_bytes):
        from faster_fifo import Queue

        self.queue = Queue(max_size_bytes=capacity_bytes)

    def put_fn(self):
        return functools.partial(self.queue.put, block=True, timeout=FOREVER_S)

    def get_fn(self):
        return functools.partial(self.queue.get, True, FOREVER_S)

    def put_many_fn(self):
        return functools.partial(self.queue.put_many, block=True, timeout=FOREVER_S)

    def get_many_fn(self, max_items):
        return functools.partial(self.queue.get_many, True, FOREVER_S, max_items)

    def destroy(self):
        self.queue.close()


class ThreadQueueChannel(Channel):
    def __init__(self, ctx, capacity_bytes):
        self.queue = queue.Queue()

    def put_fn(self):
        return self.queue.put

    def get_fn(self):
        return self.queue.get


@dataclasses.dataclass(frozen=True)
class Competitor:
    name: str
    channel: type[Channel]
    threads: bool = False  # workers are threads of one process (queue.Queue cannot cross)
    mpmc: bool = True  # one endpoint may serve several producers and consumers


COMPETITORS = (
    Competitor("sage_queue", SageChannel),
    Competitor("mp_queue", MPQueueChannel),
    Competitor("mp_simplequeue", MPSimpleQueueChannel),
    Competitor("mp_pipe", MPPipeChannel, mpmc=False),
    Competitor("faster_fifo", FasterFifoChannel),
    Competitor("thread_queue", ThreadQueueChannel, threads=True),
)
SAGE = "sage_queue"


# -- worker roles (top level, so the spawn start method can pickle them) -------------

def produce(barrier, channel, payload, items, batch):
    pool = payload_pool(payload)
    mask = len(pool) - 1
    put = channel.put_fn()
    if batch:
        put_many = channel.put_many_fn()
        chunks = [pool[k:k + batch] for k in range(0, len(pool) - batch + 1, batch)]
        chunks = chunks or [(pool * batch)[:batch]]
    barrier.wait()
    start = time.monotonic()
    if batch:
        for b in range(items // batch):
            put_many(chunks[b % len(chunks)])
    else:
        for i in range(items):
            put(pool[i & mask])
    put(None)  # one sentinel per producer ends the stream
    return {"role": "producer", "items": items, "start": start}


def consume(barrier, channel, batch):
    received = 0
    if batch:
        get_many = channel.get_many_fn(batch)
    else:
        get = channel.get_fn()
    barrier.wait()
    start = time.monotonic()
    if batch:
        while True:
            got = get_many()
            if got[-1] is None:  # a single producer's sentinel is the last item it sent
                received += len(got) - 1
                break
            received += len(got)
    else:
        while get() is not None:
            received += 1
    return {"role": "consumer", "items": received, "start": start, "end": time.monotonic()}


def ping(barrier, ping_channel, pong_channel, seconds):
    put, get = ping_channel.put_fn(), pong_channel.get_fn()
    message = payload_pool("dict")[0]
    clock = time.perf_counter_ns
    samples = []
    barrier.wait()
    start = time.monotonic()
    for _ in range(PING_WARMUP):
        put(message)
        get()
    deadline = clock() + int(seconds * 1e9)
    while True:
        t0 = clock()
        put(message)
        get()
        t1 = clock()
        samples.append(t1 - t0)
        if t1 > deadline:
            break
    put(None)
    samples.sort()
    return {"role": "pinger", "items": len(samples) + PING_WARMUP, "samples": len(samples),
            "start": start, "end": time.monotonic(),
            "median_us": samples[len(samples) // 2] / 1e3,
            "p99_us": samples[min(len(samples) - 1, len(samples) * 99 // 100)] / 1e3}


def echo(barrier, ping_channel, pong_channel):
    get, put = ping_channel.get_fn(), pong_channel.put_fn()
    echoed = 0
    barrier.wait()
    while (item := get()) is not None:
        put(item)
        echoed += 1
    return {"role": "echo", "items": echoed}


def run_role(role, barrier, results, channels, args):
    """Thread entry: run one role and report its figures or its error, never both."""
    try:
        report = role(barrier, *channels, *args)
    except BaseException as exc:  # reported to the parent, which prints it
        barrier.abort()  # the others stop waiting at the start line
        report = {"role": role.__name__, "error": f"{role.__name__}: {type(exc).__name__}: {exc}"}
    results.put(report)


def run_role_in_process(role, barrier, results, channels, args):
    """Process entry: as run_role, then detach, as a real user of the queue would."""
    try:
        run_role(role, barrier, results, channels, args)
    finally:
        for channel in channels:
            channel.detach()
