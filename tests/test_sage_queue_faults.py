"""Faults: processes SIGKILLed at random moments (mid-put, mid-get, inside the lock,
inside a large copy), and close() and join() under blocked or dead peers. Faults of the
segment's file (foreign, corrupt, unfinished, /dev/shm full, mode and lifetime) are in
test_segment_files.py.

Kills go to forked children that report progress through shared memory, so the test
knows exactly which puts returned and which items a dying consumer had taken. Several
tests read the segment's header straight from /dev/shm (at the offsets the native module
reports, _native.LAYOUT); segment_layout.watch() still verifies them against info() first, so a
wrong offset fails loudly instead of testing nothing.
"""

import collections
import functools
import multiprocessing as mp
import os
import queue
import random
import signal
import struct
import subprocess
import threading
import time

import pytest
from support import roles

import fault_workers as fw
from conftest import (
    TIME_SCALE,
    kill,
    random_seed,
    requires_native,
    scaled,
    segment_file,
    wait_for,
    wait_for_waiters,
)

pytestmark = [requires_native, pytest.mark.timeout(120)]

ctx = mp.get_context("fork")  # fast to start; the children are killed anyway

# The shared layout's offsets, as the native module reports them (tests/segment_layout.py).
try:
    from segment_layout import LAYOUT, field, watch
except ImportError:  # no native build: every test here is skipped (requires_native)
    LAYOUT, watch = collections.defaultdict(int), None

    def field(name):
        return 0

OFF_MAGIC, OFF_VERSION, OFF_HEADER_BYTES, OFF_CAPACITY = (
    field("segment.magic"), field("segment.version"), field("segment.header_bytes"), field("segment.capacity"))
OFF_MAXSIZE, OFF_RING, OFF_TOTAL, OFF_READY = (
    field("segment.maxsize"), field("segment.ring_offset"), field("segment.total_bytes"), field("segment.ready"))
OFF_HEAD = field("counters.head")
OFF_JOURNAL_ACTIVE = field("journal.active")
OFF_SAVED_HEAD = field("journal.saved") + LAYOUT["counters.head"]
REC_STATE, REC_LEN = LAYOUT["record.state"], LAYOUT["record.len"]
RESERVED, COMMITTED, CLAIMED, FREE = (LAYOUT[f"record.state.{s}"] for s in ("reserved", "committed", "claimed", "free"))

RECOVERY_LIMIT = 0.1 * TIME_SCALE  # "within 100 ms"
# Random-kill trials run on small shared VMs next to other tests: a trial may lose the CPU
# for a while, so at most 10% of them may exceed RECOVERY_LIMIT, and none may exceed this.
STALL_HARD_LIMIT = 0.5 * TIME_SCALE


def check_recovery(what, gaps, notes):
    """gaps: per trial, the longest time nobody made progress after the kill; notes: per trial."""
    slow = [g for g in gaps if g >= RECOVERY_LIMIT]
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    assert gaps[worst] < STALL_HARD_LIMIT, (
        f"{what} stalled {gaps[worst] * 1e3:.0f} ms after the kill in trial {worst} ({notes[worst]})"
    )
    assert len(slow) <= len(gaps) // 10, (
        f"{what} took over {RECOVERY_LIMIT * 1e3:.0f} ms to go on in {len(slow)} of {len(gaps)} trials: "
        f"{sorted(round(g * 1e3) for g in slow)} ms"
    )


def record_state(view, offset):
    """The state of the record at ring offset ``offset`` (a segment_layout.SegmentView's)."""
    return view.u32(view.record(offset))


def max_gap(start, events, end):
    pts = [start] + sorted(t for t in events if start < t < end) + [end]
    return max(b - a for a, b in zip(pts, pts[1:], strict=False))


def stopped(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0] in ("T", "t")


# -- producers killed at random moments ------------------------------------------------------


@pytest.mark.parametrize("mode", ["put", "put_many"])
def test_producer_killed_at_random_moments_loses_nothing_that_was_put_and_garbles_nothing(fresh, mode, rng):
    trials = 25
    most = 1 << 18  # seqs a producer may put in a trial; it puts a few thousand before the kill
    stalls, drains, notes, lock_recoveries, abandoned, delivered_in_flight = [], [], [], 0, 0, 0
    for trial in range(trials):
        q = fresh.queue(capacity_bytes=4 << 20)  # half the default: wraps ~4 times before the kill
        path = segment_file(q.name)
        progress, tally, times = roles.Progress(1), roles.Tally(1, 1, most), ctx.RawArray("d", most)
        p = fresh.process(fw.produce, q, progress, mode, 16, most, 128 * 1024)
        # A bounded wait longer than one 20 ms liveness slice; a consumer asleep in get() with
        # no timeout is the subject of the mid-copy tests further down. Its Empty is not
        # progress: an Empty while items wait behind a dead record is a stall.
        th = threading.Thread(target=roles.consume, args=(q, tally, 0), kwargs=dict(timeout=0.03, times=times),
                              daemon=True)
        th.start()
        wait_for(lambda: progress.handed(0) >= 0, 10, "the producer to start")
        time.sleep(rng.uniform(0.0, 0.04))
        t_kill = kill(p)
        last_done, in_flight = progress.returned(0), progress.handed(0)
        wait_for(lambda: q.qsize() == 0, 3, "the consumer to drain the queue after the kill")
        t_drained = time.monotonic()
        q.close()
        th.join(5)
        assert not th.is_alive(), "consumer stuck after close()"
        s = q.stats()
        q.detach()

        assert not tally.garbled[0], f"trial {trial}: {tally.garbled[0]} garbled items delivered: {tally.first_garbled()}"
        got, top = tally.recorded[0], tally.highest(0, 0)
        assert tally.out_of_order[0] == 0 and got == top + 1, (
            f"trial {trial}: not exactly once in order: {got} items up to seq {top}, "
            f"{tally.out_of_order[0]} out of order")
        assert last_done <= top <= in_flight, (
            f"trial {trial}: delivered up to {top}; puts returned up to {last_done}, "
            f"in flight up to {in_flight}"
        )
        stall = max_gap(t_kill, times[:got], t_drained)
        assert stall < STALL_HARD_LIMIT, f"trial {trial}: consumer silent for {stall * 1e3:.0f} ms after the kill"
        drain = t_drained - t_kill
        assert drain < STALL_HARD_LIMIT, (
            f"trial {trial}: queue drained (dead record skipped) only {drain:.2f} s after the kill")
        assert not os.path.exists(path), "segment left behind by a killed producer"
        stalls.append(stall)
        drains.append(drain)
        notes.append(f"{s}; delivered {got}, last put returned {last_done}, in flight {in_flight}")
        lock_recoveries += s.lock_recoveries
        abandoned += s.abandoned_records
        delivered_in_flight += top > last_done
    check_recovery("the consumer", stalls, notes)
    print(
        f"\n{mode}: {trials} kills; longest silence after a kill {max(stalls) * 1e3:.1f} ms "
        f"(median {sorted(stalls)[trials // 2] * 1e3:.1f} ms); kill to drained: worst {max(drains) * 1e3:.1f} ms, "
        f"median {sorted(drains)[trials // 2] * 1e3:.1f} ms; lock_recoveries={lock_recoveries}; "
        f"abandoned_records={abandoned}; in-flight items delivered in {delivered_in_flight} trials"
    )


# -- consumers killed at random moments ----------------------------------------------------


@pytest.mark.parametrize("mode", ["get", "get_many"])
def test_consumer_killed_at_random_moments_loses_at_most_its_batch_and_duplicates_nothing(fresh, mode, rng):
    trials = 20
    batch = 1 if mode == "get" else 8
    limit = 200_000
    SURVIVOR, VICTIM = 0, 1  # consumers of the Tally
    put_gaps, get_gaps, notes = [], [], []
    lock_recoveries = reclaimed = lost_total = 0
    for trial in range(trials):
        q = fresh.queue(capacity_bytes=512 * 1024)
        tally, survivor_times = roles.Tally(2, 1, limit), ctx.RawArray("d", limit)
        producer = roles.Producer(q, 0, roles.Progress(1), fw.item_maker(32 * 1024))
        survivor = fresh.process(roles.consume, q, tally, SURVIVOR, 16, True, 0.05, 0.0, survivor_times)
        victim = fresh.process(roles.consume, q, tally, VICTIM, batch, mode == "get_many", 0.05, 200e-6)
        wait_for(lambda: q.info()["waiters"]["get"] == 2, 10, "consumers to start")
        killed = []
        delay = rng.uniform(0.005, 0.05)
        killer = threading.Timer(delay, lambda: killed.append(kill(victim)))
        killer.start()
        put_times = []
        while producer.seq < limit and not (killed and time.monotonic() > killed[0] + 0.15):
            producer.put(producer.items(1), timeout=2)
            put_times.append(time.monotonic())
        killer.join()
        t_kill, t_stop, seq = killed[0], time.monotonic(), producer.seq
        wait_for(lambda: q.qsize() == 0, 3, "the survivor to drain the queue")
        q.close()
        survivor.join(5)
        assert survivor.exitcode == 0, "survivor did not finish after close()"
        s = q.stats()
        q.destroy()

        for who, c in (("survivor", SURVIVOR), ("victim", VICTIM)):
            assert tally.garbled[c] == 0, f"trial {trial}: {who} got {tally.garbled[c]} garbled items"
            assert tally.out_of_order[c] == 0, f"trial {trial}: {who} saw items out of order"
        delivered = tally.delivered()
        assert max(delivered) <= 1, f"trial {trial}: an item was delivered twice"
        assert not any(delivered[seq:]), f"trial {trial}: an item nobody put"
        lost = [i for i in range(seq) if not delivered[i]]
        assert len(lost) <= batch, f"trial {trial}: {len(lost)} items lost (batch {batch}): {lost[:10]}"
        assert not lost or lost == list(range(lost[0], lost[0] + len(lost))), (
            f"trial {trial}: lost items are not one batch: {lost}"
        )
        put_gap = max_gap(t_kill, put_times, t_stop)
        get_gap = max_gap(t_kill, survivor_times[: tally.recorded[SURVIVOR]], t_stop)
        put_gaps.append(put_gap)
        get_gaps.append(get_gap)
        notes.append(f"{s}; put {seq}, survivor took {tally.recorded[SURVIVOR]}, victim {tally.recorded[VICTIM]}, "
                     f"lost {lost}; killed {delay * 1e3:.0f} ms in")
        lock_recoveries += s.lock_recoveries
        reclaimed += s.reclaimed_records
        lost_total += len(lost)
    check_recovery("the producer", put_gaps, notes)
    check_recovery("the surviving consumer", get_gaps, notes)
    print(
        f"\n{mode}: {trials} kills; producer's longest gap after a kill: worst {max(put_gaps) * 1e3:.1f} ms, "
        f"median {sorted(put_gaps)[trials // 2] * 1e3:.1f} ms; survivor's: worst {max(get_gaps) * 1e3:.1f} ms, "
        f"median {sorted(get_gaps)[trials // 2] * 1e3:.1f} ms; items lost with the victim {lost_total}; "
        f"reclaimed_records={reclaimed}; lock_recoveries={lock_recoveries}"
    )


# -- kills inside the locked section (deterministic) ----------------------------------------


def _stop_inside_lock(pid, view, rng, want=lambda view: True, budget=8.0):
    """SIGSTOP the child at random moments until it is caught holding the queue's lock
    (the robust mutex's owner word is its tid) and want(view) holds; leaves it stopped."""
    deadline = time.monotonic() + budget
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: stopped(pid), 2, "the child to stop")
        if view.lock_owner() == pid and want(view):
            return attempts
        os.kill(pid, signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.0005))
    pytest.fail(f"never caught the child inside the lock in {attempts} attempts")


def _drain(q):
    out = []
    while True:
        try:
            out.extend(q.get_many(1024, block=False))
        except queue.Empty:
            return out


def _kill_inside_sections(fresh, want, kills_wanted):
    """SIGKILL a churning child inside locked sections that satisfy want(view), again and
    again; after each death the queue must hold exactly the items put and not yet taken."""
    rng = random.Random(random_seed())
    q = fresh.queue(capacity_bytes=256 * 1024)
    view = watch(q)
    prog = ctx.RawArray("q", 4)
    prog[1], prog[2] = -1, 0
    kills, attempts = 0, 0
    pack = struct.Struct("<Q").pack
    while kills < kills_wanted:
        first = prog[1]
        p = fresh.process(fw.churn, q, prog, 256)
        wait_for(lambda: prog[1] > first + 1000, 10, "the child to churn")
        attempts += _stop_inside_lock(p.pid, view, rng, want=want)
        kill(p)
        assert prog[3] == 0, "the churning child saw garbled or out-of-order items"
        s = q.stats()  # the first lock after the death recovers it
        kills += 1
        assert s.lock_recoveries == kills, "the dead lock holder was not counted as a recovery"
        expect = list(range(prog[2], prog[1] + 1))
        assert s.items == q.qsize() == len(expect)
        assert _drain(q) == [pack(i) for i in expect], "after rollback the queue holds other items"
        assert q.qsize() == 0 and q.stats().items == 0
        q.put_many([b"again", b"still"])  # usable afterwards
        assert q.get_many(8, timeout=1) == [b"again", b"still"]
        prog[2] = prog[1] + 1
    return kills, attempts, q.stats().lock_recoveries


def test_kills_inside_the_locked_section_are_rolled_back_and_queue_stays_consistent(fresh):
    journaled = lambda v: v.u32(OFF_JOURNAL_ACTIVE) == 1  # between begin() and end()
    kills, attempts, recoveries = _kill_inside_sections(fresh, journaled, 6)
    print(f"\n{kills} kills inside a journaled locked section, found in {attempts} SIGSTOPs; "
          f"lock_recoveries={recoveries}")


def test_kill_after_a_put_reclaimed_ring_space_does_not_resurrect_its_records(fresh):
    # The put section advanced head over freed records and may already have written its
    # new headers there; rolling head back would put those headers behind the read pointer.
    advanced_head = lambda v: v.u32(OFF_JOURNAL_ACTIVE) == 1 and v.u64(OFF_HEAD) != v.u64(OFF_SAVED_HEAD)
    kills, attempts, _ = _kill_inside_sections(fresh, advanced_head, 4)
    print(f"\n{kills} kills inside a put that had reclaimed space, found in {attempts} SIGSTOPs")


def test_qsize_right_after_a_lock_holder_died_mid_section_matches_what_a_drain_returns(fresh):
    # qsize() reads the item count without taking the lock; a holder killed inside its
    # section (its journal active: it works on a private copy of the counters and stores
    # them back as it leaves, so it may die halfway through storing) leaves the count for
    # the next locker to roll back, and qsize() must take the lock to see that through.
    rng = random.Random(random_seed())
    q = fresh.queue(capacity_bytes=256 * 1024)
    view = watch(q)
    prog = ctx.RawArray("q", 4)
    prog[1], prog[2] = -1, 0
    p = fresh.process(fw.churn, q, prog, 256)
    wait_for(lambda: prog[1] > 1000, 10, "churn")
    inside_section = lambda v: v.u32(OFF_JOURNAL_ACTIVE) == 1
    _stop_inside_lock(p.pid, view, rng, want=inside_section)
    kill(p)
    seen = q.qsize()
    drained = len(_drain(q))
    assert seen == drained, f"qsize() said {seen} right after the death, a drain returned {drained}"


def test_a_caller_waiting_for_a_held_lock_does_not_hold_the_gil(fresh):
    # The lock's holder may be another thread of this process that needs the GIL to finish
    # (a finalizer, say): waiting on the lock with the GIL held would deadlock with it, and
    # it also freezes every other thread of the process, pytest-timeout's included.
    rng = random.Random(random_seed())
    q = fresh.queue(capacity_bytes=256 * 1024)
    view = watch(q)
    prog = ctx.RawArray("q", 4)
    prog[1], prog[2] = -1, 0
    p = fresh.process(fw.churn, q, prog, 256)
    wait_for(lambda: prog[1] > 1000, 10, "churn")
    _stop_inside_lock(p.pid, view, rng)
    # If this process froze, a process of its own still resumes the child in 3 s.
    resumer = subprocess.Popen(["sh", "-c", f"sleep 3; kill -CONT {p.pid}"])
    try:
        done = []
        waiter = threading.Thread(target=lambda: done.append(q.info()), daemon=True)
        waiter.start()
        ticks, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 0.5:
            time.sleep(0.005)  # needs the GIL back after every sleep
            ticks += 1
        frozen_for = time.monotonic() - t0
        assert ticks >= 20 and frozen_for < scaled(1.5), (
            f"this thread ran {ticks} times in {frozen_for:.2f} s while another one waited for the lock"
        )
        assert not done, "info() returned while the child held the lock, stopped"
    finally:
        os.kill(p.pid, signal.SIGCONT)
        resumer.kill()
        resumer.wait()
    waiter.join(5)
    assert done and done[0]["items"] >= 0, "info() never returned once the holder went on"


# -- a producer killed between reserve and commit, inside a large copy ---------------------------

BIG = 16 << 20
KILL_ATTEMPTS = 4


class KillMissedTheCopy(Exception):
    """The child finished its copy before the SIGKILL landed: the scene never happened."""


def rerun_if_the_kill_missed(test):
    """A copy takes a few milliseconds; on a loaded machine the killer can be descheduled for
    longer. A kill that missed tests nothing, so the whole test is set up again, on a new
    queue, a few times; only a test whose every attempt missed fails."""

    @functools.wraps(test)
    def run(fresh):
        for _ in range(KILL_ATTEMPTS):
            try:
                return test(fresh)
            except KillMissedTheCopy:
                continue
        pytest.fail(f"in {KILL_ATTEMPTS} attempts the 16 MiB copy always finished before the kill landed")

    return run


def _kill_mid_copy(fresh, q, target, args, reached, still):
    """Start a child and SIGKILL it the moment reached(view) holds and it has left the locked
    section (it is then inside a multi-millisecond copy); check that still(view) holds after
    its death. A record's state is written inside the section, so reached() alone may hold
    while the child still owns the lock, and a kill there is rolled back instead."""
    view = watch(q)
    started = ctx.RawValue("i", 0)
    p = fresh.process(target, q, *args, started)
    wait_for(lambda: started.value, 10, "the child to start")
    deadline = time.monotonic() + 10
    while not (reached(view) and view.lock_owner() != p.pid):
        if time.monotonic() > deadline:
            pytest.fail("the child never reached the copy")
    t_kill = kill(p)
    if not still(view):
        raise KillMissedTheCopy
    return t_kill, view


def _state(offset, state):
    return lambda v: record_state(v, offset) == state


@rerun_if_the_kill_missed
def test_producer_killed_inside_a_large_copy_is_skipped_and_counted_abandoned(fresh):
    q = fresh.queue(capacity_bytes=18 << 20)  # BIG plus room for small items
    t_kill, view = _kill_mid_copy(fresh, q, fw.put_one, (b"\xab" * BIG,), _state(0, RESERVED), _state(0, RESERVED))
    q.put(b"after")  # a live producer's item behind the dead record
    t0 = time.monotonic()
    assert q.get(timeout=2) == b"after"
    waited = time.monotonic() - t0
    s = q.stats()
    assert waited < RECOVERY_LIMIT, f"consumer waited {waited * 1e3:.0f} ms behind the dead producer's record"
    assert s.abandoned_records == 1 and s.items == 0 and s.unfinished_tasks == 1  # only b"after"
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)  # the half-written item is never delivered
    print(f"\nskipped the dead producer's 16 MiB record in {waited * 1e3:.1f} ms")


@rerun_if_the_kill_missed
def test_consumer_already_waiting_gets_what_a_producer_killed_mid_put_many_committed(fresh):
    # The consumer is asleep on an empty queue when the producer reserves [small, 16 MiB],
    # commits the small one and dies copying the big one.
    q = fresh.queue(capacity_bytes=18 << 20)  # BIG plus room for small items
    out = []

    def consumer():
        try:
            out.append((q.get(timeout=3), time.monotonic()))
        except queue.Empty:
            out.append(("Empty", time.monotonic()))

    waiter = threading.Thread(target=consumer, daemon=True)
    waiter.start()
    wait_for_waiters(q, get=1)  # asleep in get()
    # record 0 = 32-byte header + b"small" -> record 1 (the big one) starts at offset 64
    # record 0 committed (the woken consumer may have taken it already), record 1 mid-copy
    half = lambda v: record_state(v, 0) in (COMMITTED, CLAIMED, FREE) and record_state(v, 64) == RESERVED
    big_unfinished = lambda v: record_state(v, 64) == RESERVED
    t_kill, view = _kill_mid_copy(fresh, q, fw.put_batch, ([b"small", b"\xcd" * BIG],), half,
                                  big_unfinished)
    waiter.join(5)
    item, t_got = out[0]
    assert item == b"small" and t_got - t_kill < RECOVERY_LIMIT, (
        f"the consumer blocked in get(timeout=3) got {item!r:.20} {(t_got - t_kill) * 1e3:.0f} ms after "
        f"the producer died, with the committed item queued all along"
    )
    # Abandonment is lazy: a consumer that looks (here: polls) skips the dead record once its
    # reservation is older than the 20 ms liveness age, well within the 100 ms limit.
    def polled_and_abandoned():
        with pytest.raises(queue.Empty):
            q.get_nowait()
        return q.stats().abandoned_records == 1

    wait_for(polled_and_abandoned, RECOVERY_LIMIT, "a polling consumer to skip the dead record")
    assert q.qsize() == 0


@rerun_if_the_kill_missed
def test_polling_consumer_is_not_stuck_forever_behind_a_dead_producers_record(fresh):
    q = fresh.queue(capacity_bytes=18 << 20)  # BIG plus room for small items
    t_kill, _ = _kill_mid_copy(fresh, q, fw.put_one, (b"\xab" * BIG,), _state(0, RESERVED), _state(0, RESERVED))
    q.put(b"after")
    got, deadline = None, time.monotonic() + scaled(1.0)
    while got is None and time.monotonic() < deadline:
        try:
            got = q.get_nowait()
        except queue.Empty:
            time.sleep(0.001)
    assert got == b"after", (
        f"get_nowait() kept raising Empty for 1 s with a committed item queued (qsize={q.qsize()}, "
        f"empty()={q.empty()}): only a blocking get that waits a 20 ms slice skips a dead producer"
    )


# -- a consumer killed while copying a large item out -----------------------------------------


def _consumer_dies_holding_the_head(fresh, q):
    q.put(b"\x11" * BIG)
    return _kill_mid_copy(fresh, q, fw.get_one, (), _state(0, CLAIMED), _state(0, CLAIMED))


@rerun_if_the_kill_missed
def test_consumer_killed_inside_a_large_copy_does_not_block_producers_and_is_reclaimed(fresh):
    q = fresh.queue(capacity_bytes=20 << 20)  # room for one 16 MiB item only
    _consumer_dies_holding_the_head(fresh, q)
    item = b"\x22" * BIG
    t0 = time.monotonic()
    q.put(item, timeout=2)  # needs the dead consumer's space
    waited = time.monotonic() - t0
    s = q.stats()
    assert waited < RECOVERY_LIMIT, f"producer waited {waited * 1e3:.0f} ms for the dead consumer's space"
    assert s.reclaimed_records == 1 and s.items == 1
    assert q.get(timeout=1) == item
    print(f"\nreclaimed the dead consumer's 16 MiB record in {waited * 1e3:.1f} ms")


@rerun_if_the_kill_missed
def test_producer_already_blocked_on_a_full_ring_resumes_when_the_consumer_dies_mid_copy(fresh):
    q = fresh.queue(capacity_bytes=20 << 20)
    q.put(b"\x11" * BIG)
    out, item = [], b"\x22" * BIG

    def producer():
        try:
            q.put(item, timeout=3)
            out.append(("ok", time.monotonic()))
        except queue.Full:
            out.append(("Full", time.monotonic()))

    th = threading.Thread(target=producer, daemon=True)
    th.start()
    wait_for_waiters(q, put=1)  # asleep in put(): the ring is full
    t_kill, _ = _kill_mid_copy(fresh, q, fw.get_one, (), _state(0, CLAIMED), _state(0, CLAIMED))
    th.join(5)
    what, t = out[0]
    assert what == "ok" and t - t_kill < RECOVERY_LIMIT, (
        f"blocked put() ended with {what} {(t - t_kill) * 1e3:.0f} ms after the consumer died "
        f"(reclaimed_records={q.stats().reclaimed_records})"
    )
    assert q.stats().reclaimed_records == 1


@rerun_if_the_kill_missed
def test_polling_producer_is_not_stuck_forever_behind_a_dead_consumers_record(fresh):
    q = fresh.queue(capacity_bytes=20 << 20)
    _consumer_dies_holding_the_head(fresh, q)
    ok, deadline, item = False, time.monotonic() + scaled(1.0), b"\x22" * BIG
    while not ok and time.monotonic() < deadline:
        try:
            q.put_nowait(item)
            ok = True
        except queue.Full:
            time.sleep(0.001)
    assert ok, "put_nowait() kept raising Full for 1 s behind a dead consumer's record"


# -- join() and close() with dead or blocked peers ------------------------------------------------


def test_join_returns_when_a_consumer_dies_holding_unfinished_tasks(fresh):
    q = fresh.queue()
    for i in range(5):
        q.put(i)
    taken = ctx.RawValue("i", 0)
    p = fresh.process(fw.take_without_task_done, q, 3, taken)
    wait_for(lambda: taken.value == 3, 10, "the consumer to take 3 items")
    for _ in range(2):
        q.get(timeout=1)
        q.task_done()
    done = []
    joiner = threading.Thread(target=lambda: done.append((q.join(timeout=scaled(5)), time.monotonic())),
                              daemon=True)
    joiner.start()
    wait_for_waiters(q, join=1)  # asleep in join()
    assert not done, "join() returned while a live consumer still held 3 tasks"
    t_kill = kill(p)
    joiner.join(scaled(6))
    ok, t = done[0]
    assert ok, "join() timed out although the consumer holding the tasks is dead"
    assert t - t_kill < scaled(1.0), f"join() returned {t - t_kill:.2f} s after the consumer died"
    s = q.stats()
    assert s.written_off_tasks == 3 and s.unfinished_tasks == 0
    print(f"\njoin() returned {(t - t_kill) * 1e3:.0f} ms after the consumer died")


def test_close_wakes_callers_blocked_in_get_and_put_in_other_processes_and_threads(fresh):
    getq = fresh.queue()
    putq = fresh.queue(maxsize=1)
    putq.put("fills it")
    waiters = []
    for op, qq in (("get", getq), ("put", putq)):
        for kind in ("process", "thread"):
            started, result = ctx.RawValue("i", 0), ctx.RawArray("d", 2)
            result[1] = -2
            if kind == "process":
                fresh.process(fw.wait_and_report, qq, op, started, result)
            else:
                threading.Thread(target=fw.wait_and_report, args=(qq, op, started, result), daemon=True).start()
            waiters.append((f"{op} in a {kind}", started, result))
    wait_for(lambda: all(w[1].value for w in waiters), 10, "the callers to start")
    wait_for_waiters(getq, get=2)  # all asleep in the native wait, not merely on their way
    wait_for_waiters(putq, put=2)
    assert all(w[2][1] == -2 for w in waiters), "a caller returned before close()"
    t_close = time.monotonic()
    getq.close()
    putq.close()
    wait_for(lambda: all(w[2][1] != -2 for w in waiters), 2, "the blocked callers to wake")
    for what, _, result in waiters:
        assert result[1] == 1, f"{what}: did not raise QueueClosed"
        assert result[0] - t_close < RECOVERY_LIMIT, f"{what}: woke {(result[0] - t_close) * 1e3:.0f} ms after close()"
