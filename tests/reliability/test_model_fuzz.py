"""Random sequences of operations on one SageQueue, checked step by step against a model.

The model is exact, ring bytes included: each record takes round_up(32 + len, 32) bytes; a
record that does not fit before the ring's end is preceded by a padding record up to it; a
put frees consumed space (advances head) only when it needs the room; and a put into an
empty ring restarts at a ring boundary. So queue.Full is expected exactly when the model
says the ring or maxsize is full, never "maybe". Two handles of this process share the
queue, to cover more than one attached slot.
"""

import os
import queue
import random
import uuid
from collections import deque

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from conftest import requires_native, segment_file

pytestmark = [requires_native, pytest.mark.stress, pytest.mark.timeout(300)]

try:
    from segment_layout import LAYOUT

    RECORD_HEADER = LAYOUT["record.size"]  # also the records' alignment
except ImportError:  # no native build: every test here is skipped (requires_native)
    RECORD_HEADER = 0


def record_size(payload_len):
    return (RECORD_HEADER + payload_len + RECORD_HEADER - 1) // RECORD_HEADER * RECORD_HEADER


class RingModel:
    """What the queue must hold and answer, down to the ring offsets."""

    def __init__(self, capacity, maxsize):
        self.cap, self.maxsize = capacity, maxsize
        self.head = self.read = self.tail = 0
        self.records = deque()  # (ring bytes, payload or None for padding), from read to tail
        self.count = 0
        self.unfinished = 0
        self.closed = False
        self.puts = self.gets = self.bytes_put = self.bytes_got = 0

    def put_many(self, payloads):
        """'ok', 'too_large', 'too_many' (both ValueError), 'closed' or 'full'."""
        sizes = [record_size(len(p)) for p in payloads]
        if sum(sizes) > self.cap:
            return "too_large"
        if self.maxsize and len(payloads) > self.maxsize:
            return "too_many"
        if self.closed:
            return "closed"
        if self.maxsize and self.count + len(payloads) > self.maxsize:
            return "full"
        for attempt in (0, 1):
            if attempt == 1:  # free consumed records, once, only when needed
                if self.head >= self.read:
                    break
                self.head = self.read
            if self.head == self.tail and self.tail % self.cap:
                self.head = self.read = self.tail = -(-self.tail // self.cap) * self.cap
            p, layout = self.tail, []
            for size, payload in zip(sizes, payloads, strict=True):
                if p % self.cap + size > self.cap:
                    layout.append((self.cap - p % self.cap, None))
                    p += self.cap - p % self.cap
                layout.append((size, payload))
                p += size
            if p - self.head <= self.cap:
                self.records.extend(layout)
                self.tail = p
                self.count += len(payloads)
                self.unfinished += len(payloads)
                self.puts += len(payloads)
                self.bytes_put += sum(map(len, payloads))
                return "ok"
        return "full"

    def get_many(self, max_items, max_bytes):
        """A list of payloads, 'closed' or 'empty'."""
        out, taken = [], 0
        while len(out) < max_items and self.records:
            size, payload = self.records[0]
            if payload is not None:
                if out and taken + len(payload) > max_bytes:
                    break
                out.append(payload)
                taken += len(payload)
                self.count -= 1
            self.records.popleft()
            self.read += size
        if out:
            self.gets += len(out)
            self.bytes_got += taken
            return out
        return "closed" if self.closed and self.read == self.tail else "empty"


class QueueMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        from sage_ext.sage_queue.python import sage_queue

        self.sq = sage_queue
        self.handles = []
        self.seq = 0

    @initialize(capacity=st.sampled_from([4096, 8192, 16384]), maxsize=st.sampled_from([0, 0, 1, 3, 8, 40]))
    def create(self, capacity, maxsize):
        self.name = f"model-{uuid.uuid4().hex[:16]}"
        first = self.sq.SageQueue(self.name, maxsize=maxsize, capacity_bytes=capacity)
        self.handles = [first, self.sq.SageQueue.open(self.name)]
        self.model = RingModel(first.capacity_bytes, maxsize)
        assert first.capacity_bytes == capacity

    def teardown(self):
        if not self.handles:
            return
        self.handles[1].detach()
        self.handles[0].destroy()
        assert not os.path.exists(segment_file(self.name)), "destroy() left the segment behind"

    # -- helpers ---------------------------------------------------------------

    def payload(self, length, as_bytearray):
        self.seq += 1
        data = random.Random(self.seq).randbytes(length)
        return bytearray(data) if as_bytearray else data

    def length(self, data, batch):
        cap = self.model.cap
        return data.draw(st.one_of(
            st.integers(0, 100),
            st.integers(0, cap // batch),
            st.integers(max(0, cap // batch - 200), cap // batch + 64),  # around "just fits"
        ))

    def check_put(self, call, payloads):
        expected = self.model.put_many(payloads)
        if expected == "ok":
            call()
        else:
            error = {"too_large": ValueError, "too_many": ValueError, "closed": self.sq.QueueClosed,
                     "full": queue.Full}[expected]
            with pytest.raises(error):
                call()

    def check_get(self, call, max_items, max_bytes, single):
        expected = self.model.get_many(max_items, max_bytes)
        if expected == "empty":
            with pytest.raises(queue.Empty):
                call()
        elif expected == "closed":
            with pytest.raises(self.sq.QueueClosed):
                call()
        else:
            got = [call()] if single else call()
            assert [type(x) for x in got] == [type(x) for x in expected], "item type changed in transit"
            assert got == expected, "items lost, reordered or garbled"

    # -- rules -----------------------------------------------------------------

    @rule(data=st.data(), h=st.integers(0, 1), how=st.sampled_from(["put_nowait", "put_timeout_0", "put_no_block"]),
          as_bytearray=st.booleans())
    def put_one(self, data, h, how, as_bytearray):
        item = self.payload(self.length(data, 1), as_bytearray)
        q = self.handles[h]
        call = {"put_nowait": lambda: q.put_nowait(item),
                "put_timeout_0": lambda: q.put(item, timeout=0),
                "put_no_block": lambda: q.put(item, block=False)}[how]
        self.check_put(call, [item])

    @rule(data=st.data(), h=st.integers(0, 1), n=st.integers(1, 6), as_bytearray=st.booleans(),
          timeout_0=st.booleans())
    def put_batch(self, data, h, n, as_bytearray, timeout_0):
        items = [self.payload(self.length(data, n), as_bytearray) for _ in range(n)]
        q = self.handles[h]
        if timeout_0:
            self.check_put(lambda: q.put_many(items, timeout=0), items)
        else:
            self.check_put(lambda: q.put_many(items, block=False), items)

    @rule(h=st.integers(0, 1), how=st.sampled_from(["get_nowait", "get_timeout_0", "get_no_block"]))
    def get_one(self, h, how):
        q = self.handles[h]
        call = {"get_nowait": q.get_nowait, "get_timeout_0": lambda: q.get(timeout=0),
                "get_no_block": lambda: q.get(block=False)}[how]
        self.check_get(call, 1, float("inf"), single=True)

    @rule(h=st.integers(0, 1), n=st.integers(1, 10),
          max_bytes=st.one_of(st.none(), st.integers(0, 2000), st.integers(0, 20000)))
    def get_batch(self, h, n, max_bytes):
        q = self.handles[h]
        if max_bytes is None:
            self.check_get(lambda: q.get_many(n, block=False), n, 16 << 20, single=False)
        else:
            self.check_get(lambda: q.get_many(n, timeout=0, max_bytes=max_bytes), n, max_bytes, single=False)

    @rule(h=st.integers(0, 1))
    def task_done(self, h):
        if self.model.unfinished == 0:
            with pytest.raises(ValueError):
                self.handles[h].task_done()
        else:
            self.handles[h].task_done()
            self.model.unfinished -= 1

    @rule(h=st.integers(0, 1))
    def join_without_waiting(self, h):
        assert self.handles[h].join(timeout=0) is (self.model.unfinished == 0)

    @rule(h=st.integers(0, 1), now=st.integers(0, 3))
    def close(self, h, now):
        if now == 0:  # rarely, so most runs get far before closing
            self.handles[h].close()
            self.model.closed = True

    # -- after every step ------------------------------------------------------

    @invariant()
    def counts_and_counters_match_the_model(self):
        if not self.handles:
            return
        m = self.model
        for q in self.handles:
            assert q.qsize() == m.count
            assert q.empty() is (m.count == 0)
            assert q.full() is bool(m.maxsize and m.count >= m.maxsize)
        s = self.handles[0].stats()
        assert (s.items, s.unfinished_tasks, s.closed) == (m.count, m.unfinished, m.closed)
        assert (s.puts, s.gets, s.bytes_put, s.bytes_got) == (m.puts, m.gets, m.bytes_put, m.bytes_got)
        assert s.used_bytes == m.tail - m.head, "ring accounting differs from the record-size model"
        info = self.handles[0].info()
        assert (info["head"], info["read"], info["tail"]) == (m.head, m.read, m.tail), "ring positions"
        assert (s.abandoned_records, s.reclaimed_records, s.lock_recoveries) == (0, 0, 0)


def test_random_operation_sequences_behave_like_the_reference_model():
    run_state_machine_as_test(QueueMachine, settings=settings(
        max_examples=200, stateful_step_count=50, deadline=None, print_blob=True,  # replays a failure
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    ))
