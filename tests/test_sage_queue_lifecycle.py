"""A SageQueue's life: close() draining and waking blocked callers, destroy and detach,
the segment going with its last user, forked children as users, and blocked calls that
run signal handlers as queue.Queue's do."""

import json
import multiprocessing as mp
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

import queue_workers
from conftest import (
    child_env,
    requires_native,
    scaled,
    segment_file,
    wait_for_waiters,
)

pytestmark = [requires_native, pytest.mark.timeout(60)]

spawn = mp.get_context("spawn")
fork = mp.get_context("fork")


WAKE_LIMIT = scaled(0.1)  # "blocked callers woken in < 100 ms"


# -- close, destroy, lifecycle -----------------------------------------------------


def test_close_drains_remaining_items_then_raises_queue_closed(make_queue, sq):
    q = make_queue()
    q.put_many([1, 2])
    q.close()
    with pytest.raises(sq.QueueClosed):
        q.put(3)
    assert q.get() == 1
    assert q.get_many(5) == [2]
    with pytest.raises(sq.QueueClosed):
        q.get()
    with pytest.raises(sq.QueueClosed):
        q.get_nowait()
    assert q.closed


def test_close_wakes_blocked_getter_in_thread_within_100ms(make_queue, sq):
    q = make_queue()
    woke = []

    def getter():
        try:
            q.get()
        except sq.QueueClosed:
            woke.append(time.monotonic())

    t = threading.Thread(target=getter)
    t.start()
    wait_for_waiters(q, get=1)
    closed_at = time.monotonic()
    q.close()
    t.join(5)
    assert woke and woke[0] - closed_at < WAKE_LIMIT, f"woke {(woke[0] - closed_at) * 1e3:.0f} ms after close()"


def test_close_wakes_blocked_putter_within_100ms(make_queue, sq):
    q = make_queue(maxsize=1)
    q.put(0)
    woke = []

    def putter():
        try:
            q.put(1)
        except sq.QueueClosed:
            woke.append(time.monotonic())

    t = threading.Thread(target=putter)
    t.start()
    wait_for_waiters(q, put=1)
    closed_at = time.monotonic()
    q.close()
    t.join(5)
    assert woke and woke[0] - closed_at < WAKE_LIMIT, f"woke {(woke[0] - closed_at) * 1e3:.0f} ms after close()"


def test_close_wakes_blocked_getter_in_another_process_within_100ms(make_queue):
    q = make_queue()
    result, started = spawn.Value("d", 0.0), spawn.Event()
    p = spawn.Process(target=queue_workers.wait_for_close, args=(q, result, started))
    p.start()
    assert started.wait(30)
    wait_for_waiters(q, timeout=30, get=1)  # asleep in get(), in the other process
    closed_at = time.monotonic()
    q.close()
    p.join(10)
    # CLOCK_MONOTONIC is one clock for every process of the machine
    assert p.exitcode == 0 and result.value > 0, "the other process's get() did not raise QueueClosed"
    assert result.value - closed_at < WAKE_LIMIT, f"woke {(result.value - closed_at) * 1e3:.0f} ms after close()"


def test_queue_closed_is_the_stdlib_shutdown_error_where_it_exists(sq):
    if hasattr(queue, "ShutDown"):
        assert issubclass(sq.QueueClosed, queue.ShutDown)
    assert issubclass(sq.QueueClosed, Exception)


def test_segment_is_owner_only_and_removed_when_last_user_detaches(queue_name, sq):
    a = sq.SageQueue(queue_name)
    b = sq.SageQueue.open(queue_name)
    mode = os.stat(segment_file(queue_name))
    assert stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == os.getuid()
    a.detach()
    assert os.path.exists(segment_file(queue_name))
    b.put("still works")
    assert b.get() == "still works"
    b.detach()
    assert not os.path.exists(segment_file(queue_name))


def test_context_manager_detaches(queue_name, sq):
    with sq.SageQueue(queue_name) as q:
        q.put(1)
        assert os.path.exists(segment_file(queue_name))
    assert not q.attached
    assert not os.path.exists(segment_file(queue_name))
    with pytest.raises(ValueError, match="detached"):
        q.put(2)


def test_persistent_queue_outlives_its_users_until_destroyed(queue_name, sq):
    q = sq.SageQueue(queue_name, persistent=True)
    q.put("kept")
    q.detach()
    assert os.path.exists(segment_file(queue_name))
    again = sq.SageQueue.open(queue_name)
    assert again.get() == "kept"
    again.destroy()
    assert not os.path.exists(segment_file(queue_name))


def test_destroy_removes_the_name_and_closes_it_for_peers(queue_name, sq):
    a = sq.SageQueue(queue_name)
    b = sq.SageQueue.open(queue_name)
    a.destroy()
    assert not os.path.exists(segment_file(queue_name))
    with pytest.raises(sq.QueueClosed):
        b.put(1)
    b.detach()


def test_stats_is_a_frozen_record_of_shared_counters(make_queue, sq):
    q = make_queue(maxsize=10)
    q.put_many([b"abc", b"de"])
    q.get()
    s = q.stats()
    assert isinstance(s, sq.QueueStats)
    assert (s.items, s.puts, s.gets, s.bytes_put, s.bytes_got, s.maxsize) == (1, 2, 1, 5, 3, 10)
    assert s.attached_pids == (os.getpid(),) and s.dead_pids == ()
    with pytest.raises(AttributeError):
        s.items = 5


@pytest.mark.parametrize("ctx", [spawn, fork], ids=["spawn", "fork"])
def test_child_that_is_the_last_user_removes_the_segment_on_exit(queue_name, sq, ctx):
    q = sq.SageQueue(queue_name)
    release = ctx.Event()
    p = ctx.Process(target=queue_workers.put_then_linger, args=(q, "x", release))
    p.start()
    assert q.get(timeout=30) == "x"
    q.detach()  # the child is now the only user
    assert os.path.exists(segment_file(queue_name))
    release.set()
    p.join(30)
    assert p.exitcode == 0
    assert not os.path.exists(segment_file(queue_name))


def test_detach_from_another_thread_wakes_a_blocked_getter_without_crashing(queue_name, sq):
    q = sq.SageQueue(queue_name)
    errors = []

    def getter():
        try:
            q.get()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    t = threading.Thread(target=getter)
    t.start()
    wait_for_waiters(q, get=1)
    q.detach()
    t.join(5)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], (sq.QueueClosed, ValueError))
    assert not os.path.exists(segment_file(queue_name))


# -- signals: a blocked call runs handlers, as queue.Queue's do ----------------------

# call -> (setup, the blocked call, the wait it sleeps in, what the queue must hold afterwards)
_BLOCKED_CALLS = {
    "get": ("pass", "q.get()", "get", []),
    "get_timeout": ("pass", "q.get(timeout=60)", "get", []),
    "get_many": ("pass", "q.get_many(8)", "get", []),
    "put_full": ("q.put(1)", "q.put(2)", "put", [1]),  # 2 was never put; 1 is still there
    "join": ("q.put(1)", "q.join()", "join", [1]),
}

_BLOCK_UNTIL_INTERRUPTED = """
import dataclasses, json, queue, signal, sys, time
from sage_ext.sage_queue.python.sage_queue import SageQueue
# Ctrl-C raises KeyboardInterrupt even when the test runs in the background of a shell
# (which starts its commands with SIGINT ignored).
signal.signal(signal.SIGINT, signal.default_int_handler)
q = SageQueue(sys.argv[1], maxsize=1)

def state():
    info = q.info()
    return dict(dataclasses.asdict(q.stats()), head=info["head"], read=info["read"], tail=info["tail"])

{setup}
print("ready", flush=True)
sys.stdin.readline()  # the test has attached too: it is in both snapshots
before = state()
out = {{}}
try:
    {call}
    out["result"] = "returned"
except KeyboardInterrupt:
    out.update(result="KeyboardInterrupt", at=time.monotonic())
    after = state()
    out["changed"] = {{k: (before[k], after[k]) for k in before if before[k] != after[k]}}
    left = []
    try:
        while True:
            left.append(q.get_nowait())
    except queue.Empty:
        pass
    out["left"] = left
finally:
    q.destroy()
print(json.dumps(out), flush=True)
"""


@pytest.mark.parametrize("call", sorted(_BLOCKED_CALLS))
def test_ctrl_c_interrupts_a_blocked_call_at_once(sq, queue_name, call):
    setup, blocked, wait, left = _BLOCKED_CALLS[call]
    script = _BLOCK_UNTIL_INTERRUPTED.format(setup=setup, call=blocked)
    proc = subprocess.Popen([sys.executable, "-c", script, queue_name], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout.readline() == "ready\n"
        with sq.SageQueue.open(queue_name) as q:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            wait_for_waiters(q, **{wait: 1})  # asleep in the call, not merely on its way there
            t0 = time.monotonic()
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    r = json.loads(out.strip().splitlines()[-1])
    assert r["result"] == "KeyboardInterrupt", f"{blocked} answered Ctrl-C with {r}"
    took = r["at"] - t0  # one CLOCK_MONOTONIC for every process
    assert took < scaled(0.25), f"{blocked} raised KeyboardInterrupt {took * 1e3:.0f} ms after Ctrl-C"
    assert r["changed"] == {}, f"the interrupted {blocked} changed the queue: {r['changed']} (before, after)"
    assert r["left"] == left, f"after the interrupted {blocked} the queue held {r['left']}, not {left}"
    assert not os.path.exists(segment_file(queue_name))


_HANDLER_DURING_GET = """
import signal, sys, threading, time
from sage_ext.sage_queue.python.sage_queue import SageQueue
q = SageQueue(sys.argv[1])
ran = []
signal.signal(signal.SIGALRM, lambda *_: ran.append(time.monotonic()))
signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
threading.Timer(0.5, q.put, args=("late",)).start()
t0 = time.monotonic()
item = q.get(timeout=10)
took = time.monotonic() - t0
signal.setitimer(signal.ITIMER_REAL, 0)
print(item, len([t for t in ran if t0 < t < t0 + took]), round(took, 2), flush=True)
q.destroy()
"""


def test_a_signal_handler_runs_while_get_blocks_and_the_get_goes_on(queue_name):
    out = subprocess.run([sys.executable, "-c", _HANDLER_DURING_GET, queue_name], capture_output=True,
                         text=True, env=child_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    item, handled, took = out.stdout.split()
    assert item == "late" and 0.4 < float(took) < 0.5 + scaled(1), out.stdout
    assert int(handled) >= 3, f"the SIGALRM handler ran {handled} times in the {took} s get() waited"
