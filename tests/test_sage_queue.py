"""The SageQueue contract (README: "Using the queues"): the queue.Queue surface across processes,
batches, pickling as a reference, and bad input that leaves the queue unchanged. Closing,
detaching and signals are in test_sage_queue_lifecycle.py."""

import inspect
import multiprocessing as mp
import os
import pickle
import queue
import threading
import time
import warnings

import pytest

import queue_workers
from conftest import (
    assert_unchanged,
    observable_state,
    requires_native,
    scaled,
    segment_file,
    wait_for_waiters,
)

pytestmark = [requires_native, pytest.mark.timeout(60)]

spawn = mp.get_context("spawn")
fork = mp.get_context("fork")


WAKE_LIMIT = scaled(0.1)  # "blocked callers woken in < 100 ms"


# -- basic behaviour -----------------------------------------------------------


def test_new_import_path_emits_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from sage_ext.sage_queue.python.sage_queue import SageQueue  # noqa: F401


def test_items_of_every_kind_round_trip_in_fifo_order(make_queue):
    q = make_queue()
    items = [
        {"id": 1, "vals": [1, 2, 3]},
        b"raw bytes",
        bytearray(b"mutable"),
        None,
        ("tuple", 2.5),
        "x" * 100_000,
        b"\0" * 300_000,
    ]
    for item in items:
        q.put(item)
    assert q.qsize() == len(items)
    got = [q.get() for _ in items]
    assert got == items
    assert type(got[1]) is bytes and type(got[2]) is bytearray


def test_memoryview_is_delivered_as_bytes(make_queue):
    q = make_queue()
    q.put(memoryview(b"abcdef")[1:4])
    assert q.get() == b"bcd"


class Blob:
    """Pickles its buffer out-of-band under protocol 5, as numpy arrays do."""

    def __init__(self, data):
        self.data = bytearray(data)

    def __reduce_ex__(self, protocol):
        return (Blob, (pickle.PickleBuffer(self.data),))


def test_out_of_band_buffers_arrive_intact_and_writable(make_queue):
    q = make_queue()
    payload = os.urandom(1 << 20)
    buffers = []
    pickle.dumps(Blob(payload), protocol=5, buffer_callback=buffers.append)
    assert len(buffers) == 1, "the test object must really use an out-of-band buffer"
    q.put({"blob": Blob(payload), "n": 7})
    got = q.get()
    assert got["n"] == 7 and bytes(got["blob"].data) == payload
    got["blob"].data[0] ^= 0xFF  # a private copy, not a view into the ring


def test_get_on_empty_queue_raises_empty_and_honours_timeout(make_queue):
    q = make_queue()
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(block=False, timeout=5)  # block=False ignores timeout, as in queue.Queue
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 0.2 + scaled(0.5)


def test_put_on_full_queue_raises_full_and_honours_timeout(make_queue):
    q = make_queue(maxsize=2)
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    assert 0.18 <= time.monotonic() - t0 < 0.2 + scaled(0.5)
    assert [q.get(), q.get()] == [1, 2]


def _once_blocked(q, call, **waiters):
    """Run call() in a thread as soon as the queue shows ``waiters`` asleep in it."""

    def run():
        wait_for_waiters(q, **waiters)
        call()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_blocked_put_resumes_when_a_consumer_makes_room(make_queue):
    q = make_queue(maxsize=1)
    q.put("first")
    got = []
    t = _once_blocked(q, lambda: got.append(q.get()), put=1)  # only once put() is asleep
    q.put("second", timeout=scaled(10))
    t.join(scaled(10))
    assert got == ["first"] and q.get() == "second"


def test_ring_capacity_bounds_the_queue_when_maxsize_is_zero(make_queue):
    q = make_queue(capacity_bytes=64 * 1024)
    item = b"x" * 1000
    count = 0
    with pytest.raises(queue.Full):
        while True:
            q.put_nowait(item)
            count += 1
    assert 50 < count < 66
    assert q.get() == item
    q.put_nowait(item)  # a freed record makes room again


def test_wrapping_around_the_ring_many_times_keeps_every_item(make_queue):
    q = make_queue(capacity_bytes=16 * 1024)
    for i in range(5000):
        q.put(b"%d" % i * (i % 50 + 1))
        assert q.get() == b"%d" % i * (i % 50 + 1)


# -- bad input leaves the queue unchanged ------------------------------------------


def test_put_larger_than_ring_is_rejected_and_queue_unchanged(make_queue):
    q = make_queue(capacity_bytes=64 * 1024)
    q.put("keep")
    before = observable_state(q)
    with pytest.raises(ValueError) as err:
        q.put(b"x" * 100_000)
    assert "100000" in str(err.value) and "65536" in str(err.value)
    assert_unchanged(q, before)
    assert q.get() == "keep"


def test_unpicklable_item_raises_in_put_and_queue_unchanged(make_queue):
    q = make_queue()
    q.put("keep")
    before = observable_state(q)
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        q.put(threading.Lock())
    assert_unchanged(q, before, "put() of an unpicklable item")
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        q.put_many(["fine", lambda: None])
    assert_unchanged(q, before, "put_many() with an unpicklable item")
    assert q.get() == "keep"


# name (built around a unique token, so the test can tell that nothing of it appeared in
# /dev/shm while other tests run) -> what the error must say: the character or the length
_BAD_NAMES = {
    "empty": (lambda t: "", ("empty",)),
    "slash": (lambda t: f"{t}/b", ("'/'",)),
    "absolute": (lambda t: f"/{t}", ("'/'",)),
    "dotdot": (lambda t: "..", ("'..'",)),
    "dotdot_inside": (lambda t: f"{t}..b", ("'..'",)),
    "dot": (lambda t: ".", ("'.'",)),
    "nul": (lambda t: f"{t}\0byte", ("0x00", "NUL", "\\x00")),
    "space": (lambda t: f"{t} x", ("' '",)),
    "tab": (lambda t: f"{t}\tx", ("0x09", "\\t")),
    "too_long": (lambda t: t + "x" * (201 - len(t)), ("201", "200")),
    "non_ascii": (lambda t: f"{t}é", ("'é'", "U+00E9")),
}


@pytest.mark.parametrize("case", sorted(_BAD_NAMES))
@pytest.mark.parametrize("how", ["open_or_create", "create", "open"])
def test_bad_queue_names_are_rejected(sq, queue_name, case, how):
    make, says = _BAD_NAMES[case]
    token = queue_name[-8:] + "bad"
    name = make(token)
    call = {"open_or_create": sq.SageQueue, "create": sq.SageQueue.create, "open": sq.SageQueue.open}[how]
    with pytest.raises(ValueError) as err:
        call(name)
    assert any(s in str(err.value) for s in says), f"{str(err.value)!r} names none of {says}"
    prefix = sq.SEGMENT_PREFIX
    made = [f for f in os.listdir(sq.SEGMENT_DIR) if token in f or f in (prefix, prefix + ".", prefix + "..")]
    assert made == [], f"a refused name created {made} in /dev/shm"


def test_longest_allowed_name_works(make_queue):
    q = make_queue(name="n" * 200)
    q.put(1)
    assert q.get() == 1


def test_non_string_name_is_a_type_error(sq):
    with pytest.raises(TypeError):
        sq.SageQueue(42)


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.put(1, timeout=-1),
        lambda q: q.get(timeout=-0.5),
        lambda q: q.put_many([1], timeout=-1),
        lambda q: q.get_many(4, timeout=-1),
        lambda q: q.join(timeout=-1),
    ],
)
def test_negative_timeout_is_a_value_error_and_queue_unchanged(make_queue, call):
    q = make_queue()
    q.put("keep")
    before = observable_state(q)
    with pytest.raises(ValueError, match="non-negative"):
        call(q)
    assert_unchanged(q, before)



def test_put_and_get_take_queue_queue_arguments_by_position_or_name(make_queue, sq):
    q = make_queue(maxsize=1)
    q.put(item="a", block=True, timeout=None)
    with pytest.raises(queue.Full):
        q.put("b", 0)  # any false value means do not block, as in queue.Queue
    with pytest.raises(queue.Full):
        q.put("b", True, 0.01)
    assert q.get(block=1, timeout=5) == "a"
    with pytest.raises(queue.Empty):
        q.get(None)
    q.put_nowait(item="c")
    assert q.get_nowait() == "c"
    assert str(inspect.signature(sq.SageQueue.put)) == "(self, /, item, block=True, timeout=None)"
    assert str(inspect.signature(sq.SageQueue.get)) == "(self, /, block=True, timeout=None)"


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda q: q.put(), "missing required argument 'item'"),
        (lambda q: q.put(1, True, None, 4), "at most 3 arguments"),
        (lambda q: q.put(1, blok=False), "unexpected keyword argument 'blok'"),
        (lambda q: q.put(1, item=2), "multiple values for argument 'item'"),
        (lambda q: q.get(True, None, 1), "at most 2 arguments"),
        (lambda q: q.get_nowait(False), "at most 0 arguments"),
        (lambda q: q.put_nowait(), "missing required argument 'item'"),
    ],
)
def test_wrong_arguments_to_put_and_get_are_a_type_error_naming_them_and_queue_unchanged(make_queue, call, names):
    q = make_queue()
    q.put("keep")
    before = observable_state(q)
    with pytest.raises(TypeError, match=names):
        call(q)
    assert_unchanged(q, before)


def test_a_subclass_that_never_opened_the_queue_is_a_type_error_not_a_crash(sq):
    class NeverOpened(sq.SageQueue):
        def __init__(self):
            pass

    with pytest.raises(TypeError, match="__init__"):
        NeverOpened().put(1)
    with pytest.raises(TypeError, match="__init__"):
        NeverOpened().get_nowait()

def test_negative_sizes_are_rejected(sq, queue_name):
    with pytest.raises(ValueError):
        sq.SageQueue(queue_name, maxsize=-1)
    with pytest.raises(ValueError):
        sq.SageQueue(queue_name, capacity_bytes=-5)
    with pytest.raises(ValueError):
        sq.SageQueue(queue_name, capacity_bytes=100)  # below one page
    assert not os.path.exists(segment_file(queue_name))


def test_reopening_with_different_sizes_is_an_error(make_queue, sq):
    q = make_queue(maxsize=3, capacity_bytes=1 << 20)
    q.put(b"keep")
    before = observable_state(q)
    with pytest.raises(ValueError, match="maxsize=3"):
        sq.SageQueue(q.name, maxsize=5)
    with pytest.raises(ValueError, match="capacity_bytes"):
        sq.SageQueue(q.name, capacity_bytes=2 << 20)
    assert_unchanged(q, before, "a refused reopen")
    with sq.SageQueue(q.name) as same:
        assert same.maxsize == 3 and same.capacity_bytes == 1 << 20


def test_open_missing_queue_is_file_not_found_and_create_existing_is_file_exists(make_queue, sq, queue_name):
    with pytest.raises(FileNotFoundError):
        sq.SageQueue.open(queue_name + "-missing")
    q = make_queue()
    with pytest.raises(FileExistsError):
        sq.SageQueue.create(q.name)


def test_task_done_called_too_often_is_a_value_error(make_queue):
    q = make_queue()
    q.put(1)
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match="too many times"):
        q.task_done()


# -- batches ---------------------------------------------------------------------


def test_put_many_and_get_many_keep_order_and_bounds(make_queue):
    q = make_queue()
    q.put_many(range(100))
    assert q.qsize() == 100
    assert q.get_many(10) == list(range(10))
    assert q.get_many(1000) == list(range(10, 100))
    with pytest.raises(queue.Empty):
        q.get_many(5, block=False)
    with pytest.raises(ValueError):
        q.get_many(0)


def test_get_many_stops_at_max_bytes_but_always_returns_one(make_queue):
    q = make_queue()
    q.put_many([b"a" * 1000] * 10)
    assert len(q.get_many(10, max_bytes=3500)) == 3
    assert len(q.get_many(10, max_bytes=10)) == 1


def test_put_many_is_all_or_nothing_on_full(make_queue):
    q = make_queue(maxsize=5)
    q.put_many([1, 2, 3])
    before = observable_state(q)
    with pytest.raises(queue.Full):
        q.put_many([4, 5, 6], block=False)
    with pytest.raises(queue.Full):
        q.put_many([4, 5, 6], timeout=0.1)
    assert_unchanged(q, before, "a put_many() that raised Full")
    with pytest.raises(ValueError, match="maxsize"):
        q.put_many(range(6))
    assert_unchanged(q, before, "a put_many() larger than maxsize")
    q.put_many([4, 5])
    assert q.get_many(10) == [1, 2, 3, 4, 5]


def test_batch_larger_than_ring_is_rejected(make_queue):
    q = make_queue(capacity_bytes=16 * 1024)
    q.put(b"keep")
    before = observable_state(q)
    with pytest.raises(ValueError, match="larger than the ring"):
        q.put_many([b"x" * 1000] * 20)
    assert_unchanged(q, before)
    assert q.get_nowait() == b"keep"


def test_get_many_waits_for_the_first_item(make_queue):
    q = make_queue()
    t = _once_blocked(q, lambda: q.put_many([1, 2]), get=1)  # only once get_many() is asleep
    assert q.get_many(10, timeout=scaled(10)) == [1, 2]
    t.join(scaled(10))


# -- across processes ------------------------------------------------------------


def test_spawned_process_attaches_by_pickled_reference(make_queue):
    q = make_queue()
    p = spawn.Process(target=queue_workers.put_items, args=(q, [{"n": i} for i in range(100)]))
    p.start()
    got = [q.get(timeout=30) for _ in range(100)]
    p.join(30)
    assert p.exitcode == 0
    assert got == [{"n": i} for i in range(100)]


def test_pickle_round_trip_reaches_the_same_queue(make_queue):
    q = make_queue()
    other = pickle.loads(pickle.dumps(q))
    other.put("via the copy")
    assert q.get() == "via the copy"
    other.detach()


def test_qsize_empty_full_are_exact_across_processes(make_queue):
    q = make_queue(maxsize=7)
    q.put_many(range(7))
    out = spawn.SimpleQueue()
    p = spawn.Process(target=queue_workers.report_qsize, args=(q.name, out))
    p.start()
    assert out.get() == (7, False, True)
    p.join(30)


def test_join_waits_for_task_done_in_another_process(make_queue):
    q = make_queue()
    q.put_many(range(20))
    assert q.join(timeout=0.05) is False
    p = spawn.Process(target=queue_workers.get_and_task_done, args=(q, 20, 0.01))
    p.start()
    assert q.join(timeout=30) is True
    p.join(30)
    assert q.stats().unfinished_tasks == 0


def test_many_producers_and_consumers_deliver_each_item_once_in_producer_order(make_queue):
    q = make_queue(capacity_bytes=256 * 1024)
    producers, consumers, count = 4, 4, 5000
    out = fork.SimpleQueue()
    procs = [fork.Process(target=queue_workers.put_range, args=(q, p, count)) for p in range(producers)]
    procs += [fork.Process(target=queue_workers.drain_until_closed, args=(q, out)) for _ in range(consumers)]
    for p in procs:
        p.start()
    for p in procs[:producers]:
        p.join(60)
    while q.qsize():
        time.sleep(0.01)
    q.close()
    results = [out.get() for _ in range(consumers)]
    for p in procs[producers:]:
        p.join(30)
    got = [item for r in results for item in r]
    assert sorted(got) == [(p, i) for p in range(producers) for i in range(count)]
    for r in results:  # each consumer sees each producer's items in order
        for p in range(producers):
            seq = [i for (pp, i) in r if pp == p]
            assert seq == sorted(seq)


def test_forked_child_counts_as_a_user(queue_name, sq):
    q = sq.SageQueue(queue_name)
    p = fork.Process(target=queue_workers.put_items, args=(q, ["from child"]))
    p.start()
    assert q.get(timeout=30) == "from child"
    p.join(30)
    q.detach()
    assert not os.path.exists(segment_file(queue_name))


def test_a_slot_reserved_for_a_fork_that_failed_is_released(queue_name, sq):
    q = sq.SageQueue(queue_name)
    me = os.getpid()
    q.before_fork()  # what os.fork() runs first; then the fork fails (EAGAIN, ENOMEM) and
    q.after_fork_in_parent()  # CPython runs the parent's hooks all the same
    assert q.stats().attached_pids == (me, me), "the reservation names the parent until a child claims it"
    time.sleep(sq._native.CHILD_CLAIM_SECONDS + 0.2)
    assert q.stats().attached_pids == (me,), "an unclaimed reservation must not count as a live user"
    q.detach()  # the last user: the segment goes with it
    assert not os.path.exists(segment_file(queue_name))
