"""One contract, three backends: every queue create_queue() returns behaves the same way."""

import dataclasses
import pickle
import queue
import threading
import time
import uuid

import pytest

from sage.utils import BackendStats, QueueClosed, QueueProtocol, create_queue
from sage.utils.queue_contract import MAX_ITEMS_MESSAGE, TIMEOUT_MESSAGE

from conftest import requires_native, requires_ray

pytestmark = pytest.mark.timeout(120)

BACKENDS = [
    pytest.param("sage_queue", marks=requires_native, id="sage_queue"),
    pytest.param("ray_queue", marks=requires_ray, id="ray_queue"),
    pytest.param("python_queue", id="python_queue"),
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "ray_queue":
        request.getfixturevalue("ray_cluster")
    return request.param


@pytest.fixture
def make(backend):
    made = []

    def make_queue(**options):
        options.setdefault("name", f"contract-{uuid.uuid4().hex[:10]}")
        q = create_queue(backend, **options)
        made.append(q)
        return q

    yield make_queue
    for q in made:
        getattr(q, "destroy", q.close)()


def test_put_get_is_fifo_and_counts(make):
    q = make()
    for i in range(10):
        q.put({"i": i})
    assert q.qsize() == 10 and not q.empty()
    assert [q.get()["i"] for _ in range(10)] == list(range(10))
    assert q.empty()


def test_nowait_calls_raise_stdlib_empty_and_full(make):
    q = make(maxsize=1)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait("a")
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait("b")
    with pytest.raises(queue.Full):
        q.put("b", block=False)
    assert q.get_nowait() == "a"


def test_timeouts_wait_then_raise(make):
    q = make(maxsize=1)
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.3)
    assert time.monotonic() - t0 >= 0.25
    q.put(1)
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.3)
    assert time.monotonic() - t0 >= 0.25


def test_negative_timeout_is_a_value_error(make):
    q = make()
    for call in (lambda: q.put(1, timeout=-1), lambda: q.get(timeout=-1),
                 lambda: q.put_many([1], timeout=-1), lambda: q.get_many(2, timeout=-1)):
        with pytest.raises(ValueError):
            call()
    assert q.qsize() == 0


def test_batches_keep_order_and_block_with_timeout(make):
    q = make(maxsize=10)
    q.put_many(range(6))
    assert q.get_many(4) == [0, 1, 2, 3]
    assert q.get_many(100) == [4, 5]
    with pytest.raises(queue.Empty):
        q.get_many(5, timeout=0.2)
    q.put_many(range(8))
    with pytest.raises(queue.Full):
        q.put_many(range(5), timeout=0.2)  # all or nothing
    assert q.qsize() == 8
    with pytest.raises(ValueError):
        q.put_many(range(11))  # can never fit


def test_blocked_batch_get_wakes_when_items_arrive(make):
    q = make()
    threading.Timer(0.3, q.put_many, args=([1, 2, 3],)).start()
    assert q.get_many(10, timeout=30) == [1, 2, 3]


def test_close_drains_then_raises_queue_closed(make):
    q = make()
    q.put_many(["a", "b"])
    q.close()
    with pytest.raises(QueueClosed):
        q.put("c")
    assert q.get() == "a"
    assert q.get_many(5) == ["b"]
    with pytest.raises(QueueClosed):
        q.get(timeout=5)
    assert q.closed


def test_close_wakes_a_blocked_getter(make):
    q = make()
    outcome = []

    def getter():
        try:
            q.get(timeout=30)
        except QueueClosed:
            outcome.append(time.monotonic())

    t = threading.Thread(target=getter)
    t.start()
    time.sleep(0.3)
    closed_at = time.monotonic()
    q.close()
    t.join(30)
    assert outcome and outcome[0] - closed_at < 2.0


def test_task_done_and_join(make):
    q = make()
    q.put_many([1, 2])
    assert q.join(timeout=0.1) is False
    q.get_many(2)
    q.task_done()
    q.task_done()
    assert q.join(timeout=5) is True
    with pytest.raises(ValueError):
        q.task_done()


def test_same_name_reaches_the_same_queue(backend, make):
    name = f"shared-{uuid.uuid4().hex[:10]}"
    a = make(name=name)
    b = create_queue(backend, name=name)
    a.put("hello")
    assert b.get(timeout=10) == "hello"
    if backend == "sage_queue":
        b.detach()


def test_stats_share_the_common_fields(make):
    q = make(maxsize=5)
    q.put_many([1, 2, 3])
    q.get()
    s = q.stats()
    assert (s.items, s.maxsize, s.puts, s.gets, s.closed) == (2, 5, 3, 1, False)
    assert s.name == q.name


def test_pickling_is_a_reference_or_a_clear_error(backend, make):
    q = make()
    if backend == "python_queue":
        with pytest.raises(TypeError, match="cannot be sent to another process"):
            pickle.dumps(q)
        return
    copy = pickle.loads(pickle.dumps(q))
    copy.put("through the copy")
    assert q.get(timeout=10) == "through the copy"
    if backend == "sage_queue":
        copy.detach()


@pytest.mark.parametrize("backend", BACKENDS[:2], indirect=True)  # python_queue never pickles
def test_unpicklable_item_fails_in_the_caller_and_queue_unchanged(backend, make):
    q = make()
    q.put("keep")
    with pytest.raises(Exception) as err:
        q.put(threading.Lock())
    assert "pickle" in str(err.value).lower() or isinstance(err.value, TypeError)
    assert q.qsize() == 1 and q.get() == "keep"


# -- the contract module: one table of bad arguments, one stats record, one set of errors ----

BAD_ARGUMENTS = [
    ("put, negative timeout", lambda q: q.put("x", timeout=-1), TIMEOUT_MESSAGE),
    ("get, negative timeout", lambda q: q.get(timeout=-0.5), TIMEOUT_MESSAGE),
    ("get, NaN timeout", lambda q: q.get(timeout=float("nan")), TIMEOUT_MESSAGE),
    ("put_many, negative timeout", lambda q: q.put_many(["x"], timeout=-1), TIMEOUT_MESSAGE),
    ("get_many, negative timeout", lambda q: q.get_many(2, timeout=-1), TIMEOUT_MESSAGE),
    ("join, negative timeout", lambda q: q.join(timeout=-1), TIMEOUT_MESSAGE),
    ("get_many of 0 items", lambda q: q.get_many(0), MAX_ITEMS_MESSAGE),
    ("batch larger than maxsize", lambda q: q.put_many(range(4)),
     "batch of 4 items exceeds maxsize=3 of queue '{name}'"),
]


@pytest.mark.parametrize("call, message", [pytest.param(c, m, id=i) for i, c, m in BAD_ARGUMENTS])
def test_bad_arguments_raise_the_same_value_error_and_leave_the_queue_unchanged(make, call, message):
    q = make(maxsize=3)
    q.put("keep")
    before = q.stats()
    with pytest.raises(ValueError) as err:
        call(q)
    assert str(err.value) == message.format(name=q.name)
    assert q.stats() == before if q.backend != "sage_queue" else _shared(q.stats()) == _shared(before)
    assert q.get_nowait() == "keep"


def _shared(stats):
    """The BackendStats fields of a stats record (sage_queue's has more: waiters, pids)."""
    return {f.name: getattr(stats, f.name) for f in dataclasses.fields(BackendStats)}


def test_negative_maxsize_is_refused_by_every_backend(backend):
    with pytest.raises(ValueError, match=r"^maxsize must be >= 0, got -1$"):
        create_queue(backend, name=f"neg-{uuid.uuid4().hex[:10]}", maxsize=-1)


def test_every_backend_implements_the_protocol_and_reports_the_shared_stats(make):
    q = make(maxsize=4)
    assert isinstance(q, QueueProtocol)
    s = q.stats()
    assert isinstance(s, BackendStats)
    assert (s.backend, s.name, s.maxsize, s.unfinished_tasks) == (q.backend, q.name, 4, 0)


def test_queue_closed_is_one_class_wherever_it_is_imported_from():
    from sage.utils import errors
    from sage_ext.sage_queue.python import errors as native_errors

    assert native_errors.QueueClosed is errors.QueueClosed is QueueClosed
    assert native_errors.BackendUnavailableError is errors.BackendUnavailableError


# -- configured timeouts ------------------------------------------------------------------

@pytest.fixture
def timed(backend, clean_env):
    """make_queue with SAGE_QUEUE_PUT_TIMEOUT / SAGE_QUEUE_GET_TIMEOUT of 0.2 s in the environment."""
    clean_env.setenv("SAGE_QUEUE_PUT_TIMEOUT", "0.2")
    clean_env.setenv("SAGE_QUEUE_GET_TIMEOUT", "0.2")
    made = []

    def make_queue(**options):
        q = create_queue(backend, name=f"timed-{uuid.uuid4().hex[:10]}", **options)
        made.append(q)
        return q

    yield make_queue
    for q in made:
        getattr(q, "destroy", q.close)()


def _raises_after(exc, call, seconds):
    t0 = time.monotonic()
    with pytest.raises(exc):
        call()
    waited = time.monotonic() - t0
    assert seconds * 0.8 <= waited < seconds + 5, waited


def test_configured_timeouts_apply_when_a_call_passes_none(timed):
    q = timed(maxsize=1)
    assert (q.put_timeout, q.get_timeout) == (0.2, 0.2)
    _raises_after(queue.Empty, q.get, 0.2)
    _raises_after(queue.Empty, lambda: q.get_many(4), 0.2)
    q.put("a")
    _raises_after(queue.Full, lambda: q.put("b"), 0.2)
    _raises_after(queue.Full, lambda: q.put_many(["b"]), 0.2)
    assert q.get() == "a"


def test_a_timeout_argument_wins_over_the_configured_one(timed):
    q = timed(maxsize=1)
    _raises_after(queue.Empty, lambda: q.get(timeout=0.6), 0.6)
    threading.Timer(0.6, q.put, args=("late",)).start()
    assert q.get(timeout=None) == "late"  # None waits without limit, past the 0.2 s default
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(block=False)  # never waits, whatever is configured
    assert time.monotonic() - t0 < 0.15


def test_create_queue_arguments_win_over_the_configured_timeouts(timed):
    q = timed(put_timeout=None, get_timeout=1.0)
    assert (q.put_timeout, q.get_timeout) == (None, 1.0)
    _raises_after(queue.Empty, q.get, 1.0)


def test_a_queue_sent_to_another_process_keeps_its_default_timeouts(backend, timed):
    q = timed()
    if backend == "python_queue":
        return  # cannot cross processes (test_pickling_is_a_reference_or_a_clear_error)
    copy = pickle.loads(pickle.dumps(q))
    assert (copy.put_timeout, copy.get_timeout) == (0.2, 0.2)
    _raises_after(queue.Empty, copy.get, 0.2)
    if backend == "sage_queue":
        copy.detach()


def test_a_bad_default_timeout_names_the_setting(backend):
    with pytest.raises(ValueError, match=r"get_timeout must be seconds >= 0 or None, got -1"):
        create_queue(backend, name=f"bad-{uuid.uuid4().hex[:10]}", get_timeout=-1)


# -- the configuration's sizes reach every queue ----------------------------------------------

def test_configured_maxsize_reaches_the_queue(backend, clean_env):
    clean_env.setenv("SAGE_QUEUE_MAXSIZE", "3")
    q = create_queue(backend, name=f"sized-{uuid.uuid4().hex[:10]}")
    try:
        assert q.maxsize == 3 and q.stats().maxsize == 3
        q.put_many([1, 2, 3])
        assert q.full()
        with pytest.raises(queue.Full):
            q.put_nowait(4)
    finally:
        getattr(q, "destroy", q.close)()


@requires_native
def test_configured_capacity_reaches_sage_queue(clean_env):
    clean_env.setenv("SAGE_QUEUE_CAPACITY_BYTES", str(1 << 16))
    q = create_queue("sage_queue", name=f"cap-{uuid.uuid4().hex[:10]}")
    try:
        assert q.capacity_bytes == 1 << 16 == q.stats().capacity_bytes
        with pytest.raises(ValueError, match="larger than the ring"):
            q.put(bytes(1 << 17))
    finally:
        q.destroy()


# -- close, join, Ray placement ---------------------------------------------------------------

@pytest.mark.parametrize("backend", [BACKENDS[1], BACKENDS[2]], indirect=True)
def test_close_wakes_a_blocked_put(make):
    q = make(maxsize=1)
    q.put("fills it")
    outcome = []

    def putter():
        try:
            q.put("blocked", timeout=30)
            outcome.append("put returned")
        except QueueClosed:
            outcome.append(time.monotonic())

    t = threading.Thread(target=putter)
    t.start()
    t.join(0.3)  # the put blocks on the full queue: the thread is still there
    assert t.is_alive() and not outcome
    closed_at = time.monotonic()
    q.close()
    t.join(30)
    assert outcome and outcome[0] != "put returned" and outcome[0] - closed_at < 2.0
    assert q.get() == "fills it"  # close keeps what was put before


def test_join_waits_until_the_last_task_done(make):
    q = make()
    q.put_many(["a", "b"])
    returned = []
    joiner = threading.Thread(target=lambda: returned.append((q.join(timeout=30), time.monotonic())))
    joiner.start()
    q.get_many(2)
    q.task_done()
    joiner.join(0.3)  # one task is still open: join is still waiting
    assert joiner.is_alive() and not returned
    done_at = time.monotonic()
    q.task_done()
    joiner.join(30)
    assert returned and returned[0][0] is True and returned[0][1] >= done_at


@requires_ray
def test_a_ray_queue_handed_to_a_task_and_to_an_actor_is_the_same_queue(ray_cluster):
    ray = ray_cluster
    q = create_queue("ray_queue", name=f"handed-{uuid.uuid4().hex[:10]}", get_timeout=30)

    @ray.remote
    def produce(handle, count):
        handle.put_many(list(range(count)))
        return handle.qsize()

    @ray.remote
    class Consumer:
        def __init__(self, handle):
            self.handle = handle

        def take(self, count):
            return [self.handle.get() for _ in range(count)]

    try:
        assert ray.get(produce.remote(q, 5), timeout=60) == 5
        consumer = Consumer.remote(q)
        assert ray.get(consumer.take.remote(5), timeout=60) == [0, 1, 2, 3, 4]
        assert q.qsize() == 0 and q.stats().gets == 5
        ray.kill(consumer)
    finally:
        q.destroy()


@requires_ray
def test_configured_ray_namespace_reaches_the_queue_actor(ray_cluster, clean_env):
    from sage.utils.ray_queue import ACTOR_NAME_PREFIX

    clean_env.setenv("SAGE_QUEUE_RAY_NAMESPACE", "sage-contract-ns")
    q = create_queue("ray_queue", name=f"ns-{uuid.uuid4().hex[:10]}")
    try:
        assert q.namespace == "sage-contract-ns"
        actor = ray_cluster.get_actor(ACTOR_NAME_PREFIX + q.name, namespace="sage-contract-ns")
        assert ray_cluster.get(actor.state.remote())["maxsize"] == q.maxsize
    finally:
        q.destroy()


@pytest.mark.parametrize("mode", [pytest.param("process", marks=requires_native), "thread"])
def test_configured_timeouts_leave_the_runtimes_own_queues_blocking(clean_env, mode):
    from sage.core.api import LocalEnvironment

    clean_env.setenv("SAGE_QUEUE_GET_TIMEOUT", "0.05")
    clean_env.setenv("SAGE_QUEUE_PUT_TIMEOUT", "0.05")
    seen = []

    def slow(x):
        time.sleep(0.2)  # the sink's input stays empty longer than the configured get timeout
        return x

    env = LocalEnvironment("timeouts-stay-out", mode=mode)
    env.from_collection([1, 2, 3]).map(slow).sink(seen.append if mode == "thread" else print)
    env.submit(autostop=True)
    if mode == "thread":
        assert sorted(seen) == [1, 2, 3]
