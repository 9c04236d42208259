"""One contract, three backends: every queue create_queue() returns behaves the same way."""

import pickle
import queue
import threading
import time
import uuid

import pytest

from sage.utils import QueueClosed, create_queue

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
