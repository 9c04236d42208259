"""Resource use: 10,000 queues created, used and destroyed, and 10,000 attach/detach cycles on
one queue, leave no file in /dev/shm and no growth in open descriptors, mappings or memory.

Baselines are taken after a warm-up, so the allocator's and the interpreter's first-use
growth is not counted.
"""

import gc
import os
import uuid

import pytest

from conftest import requires_native, segment_file

pytestmark = [requires_native, pytest.mark.timeout(300)]

CYCLES, WARM_UP = 10_000, 200
RSS_SLACK = 2 << 20  # bytes; a leak of one 4 KiB page every 20 cycles would exceed it
PAGE = os.sysconf("SC_PAGE_SIZE")


def usage():
    gc.collect()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    with open("/proc/self/maps") as f:
        mappings = sum(1 for _ in f)
    return {"fds": len(os.listdir("/proc/self/fd")), "mappings": mappings, "rss": rss}


def leftovers(prefix):
    from sage_ext.sage_queue.python import _native

    return sorted(f for f in os.listdir(_native.SEGMENT_DIR) if f.startswith(_native.SEGMENT_PREFIX + prefix))


def check_no_growth(before, after, what):
    assert after["fds"] == before["fds"], f"{what}: open descriptors went from {before['fds']} to {after['fds']}"
    assert after["mappings"] == before["mappings"], (
        f"{what}: mappings went from {before['mappings']} to {after['mappings']}")
    grew = after["rss"] - before["rss"]
    assert grew < RSS_SLACK, f"{what}: RSS grew by {grew / 1024:.0f} KiB over {CYCLES} cycles"


def test_ten_thousand_queues_created_used_and_destroyed_leave_nothing_behind():
    from sage_ext.sage_queue.python import sage_queue

    prefix = f"res-{uuid.uuid4().hex[:12]}-"
    handles_before = len(sage_queue._live_handles)

    def cycle(i):
        name = f"{prefix}{i}"
        if i % 2:
            q = sage_queue.SageQueue(name, capacity_bytes=4096)
            q.put(b"item %d" % i)
            assert q.get_nowait() == b"item %d" % i
            q.destroy()
        else:
            with sage_queue.SageQueue(name, capacity_bytes=4096) as q:
                q.put_many([i, "two"])
                assert q.get_many(2, block=False) == [i, "two"]
        assert not os.path.exists(segment_file(name)), f"cycle {i} left its segment behind"

    try:
        for i in range(WARM_UP):
            cycle(i)
        before = usage()
        for i in range(WARM_UP, CYCLES):
            cycle(i)
        after = usage()
    finally:
        left = leftovers(prefix)
        for f in left:
            os.unlink(os.path.join("/dev/shm", f))
    assert left == [], f"{len(left)} segments left in /dev/shm: {left[:5]}"
    check_no_growth(before, after, "create/destroy")
    assert len(sage_queue._live_handles) == handles_before, "handles of destroyed queues are still registered"


def test_ten_thousand_attach_detach_cycles_reuse_handle_slots_and_leak_nothing():
    from sage_ext.sage_queue.python import sage_queue

    prefix = f"res-{uuid.uuid4().hex[:12]}-"
    name = prefix + "shared"
    owner = sage_queue.SageQueue(name, capacity_bytes=4096)

    def cycle(i):
        if i % 2:
            q = sage_queue.SageQueue.open(name)  # "already has 256 attached handles" if slots leak
            q.put(i)
            assert q.get_nowait() == i
            q.detach()
        else:
            with sage_queue.SageQueue(name) as q:
                q.put_many([i, i + 1])
                assert q.get_many(2, block=False) == [i, i + 1]
                q.task_done()
                q.task_done()

    try:
        for i in range(WARM_UP):
            cycle(i)
        before = usage()
        for i in range(WARM_UP, CYCLES):
            cycle(i)
        after = usage()
        assert os.path.exists(segment_file(name)), "a detach removed the segment while its owner was attached"
        s = owner.stats()
        assert s.attached_pids == (os.getpid(),) and s.dead_pids == (), f"slots not given back: {s}"
        assert (s.items, s.puts, s.gets) == (0, CYCLES * 3 // 2, CYCLES * 3 // 2)
        assert s.unfinished_tasks == CYCLES // 2, "task_done from short-lived handles was lost"
    finally:
        owner.destroy()
    assert leftovers(prefix) == []
    check_no_growth(before, after, "attach/detach")
