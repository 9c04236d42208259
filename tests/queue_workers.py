"""Process entry points for the sage_queue tests (top level, so spawn can import them)."""

import time


def put_items(q, items):
    for item in items:
        q.put(item)


def put_range(q, producer, count):
    for i in range(count):
        q.put((producer, i))


def get_and_task_done(q, count, delay=0.0):
    for _ in range(count):
        q.get(timeout=30)
        time.sleep(delay)
        q.task_done()


def drain_until_closed(q, out_q):
    from sage_ext.sage_queue.python.sage_queue import QueueClosed

    got = []
    while True:
        try:
            got.extend(q.get_many(32, timeout=30))
        except QueueClosed:
            break
    out_q.put(got)


def wait_for_close(q, result, started):
    """Block in get() until close(); result = the monotonic time it woke with QueueClosed, or -1."""
    from sage_ext.sage_queue.python.sage_queue import QueueClosed

    started.set()
    try:
        q.get()
        result.value = -1.0
    except QueueClosed:
        result.value = time.monotonic()


def report_qsize(name, out_q):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    with SageQueue.open(name) as q:
        out_q.put((q.qsize(), q.empty(), q.full()))


def put_then_linger(q, item, release):
    q.put(item)
    release.wait(30)
