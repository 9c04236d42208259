"""Shared memory is input every time it is read: a segment that goes bad after a queue
attached to it gives SegmentCorruptError (section rolled back, lock released), never a
signal, a write outside the mapping or a wait without end.

Each scenario runs in a child interpreter with a time limit: a crash or a hang fails the
test with what happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from conftest import child_env, requires_native, scaled, segment_file
from test_segment_trust import run_child

pytestmark = requires_native

PRELUDE = """
    import json, os, pickle, queue, struct, sys, time
    sys.path.insert(0, {tests!r})
    from segment_layout import SegmentView, field
    from sage_ext.sage_queue.python.sage_queue import SageQueue, SegmentCorruptError

    def attempt(call):
        t = time.monotonic()
        try:
            result = repr(call())
        except Exception as exc:
            result = type(exc).__name__ + ": " + str(exc)
        return dict(result=result, seconds=round(time.monotonic() - t, 3))

    q = SageQueue({name!r}, capacity_bytes=64 * 1024)
    view = SegmentView({name!r})
"""


@pytest.fixture
def name():
    made = f"corrupt-{uuid.uuid4().hex[:16]}"
    yield made
    if os.path.lexists(segment_file(made)):
        os.unlink(segment_file(made))


def scenario(name: str, body: str, timeout: float = 30, **fmt) -> dict:
    tests = os.path.dirname(os.path.abspath(__file__))
    script = textwrap.dedent(PRELUDE).format(tests=tests, name=name) + textwrap.dedent(body).format(**fmt)
    return run_child(script, timeout=timeout)


def test_a_part_length_past_the_record_is_refused_not_copied_and_the_queue_goes_on(name):
    r = scenario(name, """
        two_buffers = [pickle.PickleBuffer(bytearray(b"a" * 3000)), pickle.PickleBuffer(bytearray(b"b" * 5000))]
        q.put(two_buffers)
        q.put("after it")
        at = q.info()["head"]
        nparts = struct.unpack_from("<H", view.mm, view.record(at, "nparts"))[0]
        length = struct.unpack_from("<Q", view.mm, view.record(at, "len"))[0]
        table = view.record(at, "payload")
        first = struct.unpack_from("<Q", view.mm, table)[0]
        # The lengths of the first two parts already add up to the record; the third runs past it.
        struct.pack_into("<3Q", view.mm, table, first, length - 8 * nparts - first, 1 << 30)
        before = q.stats()
        bad = attempt(lambda: q.get(timeout=1))
        print(json.dumps(dict(nparts=nparts, bad=bad, next=attempt(lambda: q.get(timeout=1)),
                              gets=q.stats().gets - before.gets, qsize=q.qsize())))
        q.destroy()
    """)
    assert r["nparts"] == 3
    assert r["bad"]["result"].startswith("SegmentCorruptError") and "parts" in r["bad"]["result"], r
    # The corrupt record was consumed, the lock released: the next item comes out.
    assert r["next"]["result"] == repr("after it") and r["gets"] == 2 and r["qsize"] == 0, r


@pytest.mark.parametrize("value", [0, 1 << 40, 4096 * 3])
def test_a_capacity_rewritten_after_attach_is_never_used(name, value):
    r = scenario(name, """
        struct.pack_into("<Q", view.mm, field("segment.capacity"), {value})
        outcomes = dict(
            put=attempt(lambda: [q.put(b"x" * 1000, timeout=5) for _ in range(50)]),
            qsize=attempt(q.qsize),
            info=attempt(lambda: q.info()["capacity_bytes"]),
            drained=attempt(lambda: len([q.get(timeout=1) for _ in range(50)])),
        )
        print(json.dumps(outcomes))
        q.destroy()
    """, value=value)
    assert r["put"]["result"] == repr([None] * 50), r
    assert r["info"]["result"] == repr(64 * 1024) and r["drained"]["result"] == "50", r


@pytest.mark.parametrize("counter,value", [("tail", (1 << 62) - 32), ("tail", (1 << 64) - 32),
                                           ("items", 1 << 40), ("head", 96)])
def test_counters_rewritten_after_attach_are_refused_promptly_and_the_lock_released(name, counter, value):
    r = scenario(name, """
        q.put("an item")
        struct.pack_into("<Q", view.mm, field("counters.{counter}"), {value})
        first = attempt(lambda: q.get(timeout=1))
        print(json.dumps(dict(first=first, second=attempt(lambda: q.put("more", timeout=1)),
                              lock=struct.unpack_from("<I", view.mm, field("segment.mutex"))[0])))
        q.destroy()
    """, counter=counter, value=value)
    for call in ("first", "second"):
        assert r[call]["result"].startswith("SegmentCorruptError") and "cleanup --force" in r[call]["result"], r
        assert r[call]["seconds"] < scaled(1), r
    assert r["lock"] == 0, "the lock was left held"


IDLE_USER = """
import sys
from sage_ext.sage_queue.python.sage_queue import SageQueue
q = SageQueue.open(sys.argv[1])
print("attached", flush=True)
sys.stdin.readline()
"""


def test_a_lock_word_naming_an_idle_thread_of_another_user_is_refused_not_waited_for(name):
    """The word names a live thread that has the queue mapped, and sleeps: a holder never
    sleeps inside the lock, so the word was not written by a lock."""
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue(name, capacity_bytes=64 * 1024)
    idle = subprocess.Popen([sys.executable, "-c", IDLE_USER, name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert idle.stdout.readline().startswith("attached")
        t = time.monotonic()
        r = scenario(name, """
            struct.pack_into("<I", view.mm, field("segment.mutex"), {tid})
            print(json.dumps(dict(put=attempt(lambda: q.put("x")))))
        """, tid=idle.pid)
        assert r["put"]["result"].startswith("SegmentCorruptError") and "asleep" in r["put"]["result"], r
        assert time.monotonic() - t < scaled(10)
    finally:
        idle.communicate("\n", timeout=scaled(10))
        q.destroy()


def test_a_wake_skipped_because_the_sleeper_count_was_overwritten_is_not_lost(name):
    """The count of sleepers gates the wake syscall; it is shared memory, so a sleeper never
    relies on it alone (found by the hostile fuzzer: a thread's get() slept forever)."""
    r = scenario(name, """
        import threading
        got = []
        getter = threading.Thread(target=lambda: got.append(q.get()), daemon=True)
        getter.start()
        while q.info()["waiters"]["get"] != 1:
            time.sleep(0.001)
        struct.pack_into("<I", view.mm, field("segment.not_empty_sleepers"), 0)
        t = time.monotonic()
        q.put("wake up")
        getter.join(5)
        print(json.dumps(dict(got=got, seconds=time.monotonic() - t, waiters=q.info()["waiters"])))
        q.destroy()
    """)
    assert r["got"] == ["wake up"], r
    assert r["seconds"] < scaled(1), r
    assert r["waiters"] == {"get": 0, "put": 0, "join": 0}, "the sleeper count wrapped below zero"
