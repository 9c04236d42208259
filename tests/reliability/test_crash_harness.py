"""The crash harness, short mode (CI): a few hundred SIGKILLs of producers and consumers
at random moments and inside the lock, then every delivery accounted for; plus one kill
the random runs reach too rarely to rely on, made deterministic.

The long mode is `python tests/reliability/harness.py --kills 1000 ...` (see harness.py).
"""

import os
import signal
import struct
import time
import uuid

import pytest

from conftest import TIME_SCALE, native_available, random_seed, requires_native, segment_file

# The harness imports SageQueue, which the minimal profile does not build.
# SAGE_REQUIRE_NATIVE=1 makes its absence an error.
if not native_available() and os.environ.get("SAGE_REQUIRE_NATIVE") != "1":
    pytest.skip("the native sage_queue extension is not built (minimal profile)", allow_module_level=True)
import crash_analysis  # noqa: E402
import crash_workers  # noqa: E402

import harness  # noqa: E402

pytestmark = [requires_native, pytest.mark.stress, pytest.mark.timeout(240)]

# "Survivors make progress within 100 ms" on small shared VMs that also run the rest of the
# suite next to this test: a worker may lose its CPU for a while, so up to 5% of the kills may
# take longer than RECOVERY_LIMIT, and none may take longer than STALL_HARD_LIMIT.
RECOVERY_LIMIT = 0.1 * TIME_SCALE
STALL_HARD_LIMIT = 0.5 * TIME_SCALE
SLOW_SHARE = 0.05


def check_run(cfg, ops):
    """Run the harness; fail with its summary on any violation, slow recovery, or if for some
    group of operations in ops no kill landed inside any of them."""
    result = harness.run(cfg)
    print("\n" + result.summary())
    rec = result.recoveries
    slow = [r for r in rec if r >= RECOVERY_LIMIT]
    problems = list(result.violations)
    if len(slow) > SLOW_SHARE * len(rec):
        problems.append(f"{len(slow)} of {len(rec)} kills took over {RECOVERY_LIMIT * 1e3:.0f} ms "
                        f"to recover: " + ", ".join(
                            f"{k.recovery * 1e3:.0f} ms (kill {k.trial}: {k.role} in {k.phase}"
                            f"{', inside the lock' if k.in_lock else ''}; then {k.recovered_by})"
                            for k in result.kills if k.recovery >= RECOVERY_LIMIT))
    if max(rec) >= STALL_HARD_LIMIT:
        problems.append(f"worst recovery {max(rec) * 1e3:.0f} ms (limit {STALL_HARD_LIMIT * 1e3:.0f} ms)")
    caught = sum(k.in_lock for k in result.kills)
    if caught == 0:
        problems.append("no kill landed inside the lock")
    if result.stats.get("lock_recoveries", 0) < caught:
        problems.append(f"{caught} kills inside the lock but only {result.stats.get('lock_recoveries')} "
                        f"lock_recoveries counted")
    phases = {k.phase for k in result.kills}
    missed = [" or ".join(group) for group in ops if not phases & set(group)]
    if missed:
        problems.append(f"no kill landed inside {', nor inside '.join(missed)}")
    if result.join_returned is not True:
        problems.append("join() did not return")
    assert not problems, f"seed {result.seed}:\n  " + "\n  ".join(problems) + "\n" + result.summary()


# The two runs are apart in this file so that pytest-xdist's first batches put them on
# different workers.


@pytest.mark.slow
def test_one_producer_one_consumer_with_large_items_lose_nothing_put_and_recover_after_each_kill():
    # Mostly large items in a small ring: kills land inside long copies, the ring wraps and
    # fills, and the only survivor is the opposite role.
    cfg = harness.Config(seed=random_seed(),
                         kills=60, producers=1, consumers=1, capacity_bytes=2 << 20, large_fraction=0.3,
                         medium_fraction=0.3, lock_fraction=0.25,
                         max_seq=1 << 20)  # on a loaded machine catching kills inside the lock takes longer
    check_run(cfg, ops=(("put", "put_many"), ("get", "get_many")))  # 60 kills: each op is not sure


def test_kill_inside_a_put_that_restarted_the_empty_ring_leaves_the_queue_usable():
    # A put that finds the ring fully consumed reclaims it all (head = read = tail), restarts
    # at the next ring boundary and writes its new record headers at ring offset 0, over
    # records between the old head and read. Killed there, the rollback must not move head
    # back over those headers. 3000 records of 64 bytes: batches do not end on the boundary.
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    from segment_layout import LAYOUT, field

    # The ring offset, head, the journal's active flag and saved read pointer, a reserved record's state.
    OFF_RING, OFF_HEAD, OFF_JOURNAL_ACTIVE = field("segment.ring_offset"), field("counters.head"), field("journal.active")
    OFF_SAVED_READ = field("journal.saved") + LAYOUT["counters.read"]
    RESERVED = LAYOUT["record.state.reserved"]
    batch = [b"x"] * 3000
    q = SageQueue(f"crash-restart-{uuid.uuid4().hex[:12]}", capacity_bytes=1 << 20)
    view = harness.watch_lock(q)
    word = lambda off: struct.unpack_from("<Q", view.mm, off)[0]
    first_record_state = word(OFF_RING)  # the record at ring offset 0: its state word
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                q.put_many(batch)
                q.get_many(len(batch), timeout=5)
        finally:
            os._exit(1)
    try:
        def restarting():  # ... and has written its first new header, at ring offset 0
            u32 = lambda off: struct.unpack_from("<I", view.mm, off)[0]
            return (view.lock_owner() == pid and u32(OFF_JOURNAL_ACTIVE) == 1
                    and word(OFF_HEAD) > word(OFF_SAVED_READ) and u32(first_record_state) == RESERVED)

        deadline = time.monotonic() + 30
        while True:
            while not restarting():
                if time.monotonic() > deadline:
                    pytest.fail("never caught the child inside a put that restarted the ring")
            os.kill(pid, signal.SIGSTOP)
            os.waitpid(pid, os.WUNTRACED)
            if restarting():
                break
            os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pid = 0
        for _ in range(8):  # puts that need the room the dead put had reclaimed
            q.put_many(batch, timeout=1)
            assert q.get_many(len(batch), timeout=1) == batch
        s = q.stats()
        assert s.lock_recoveries == 1 and s.items == 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        view.close()
        q.destroy()
        if os.path.exists(segment_file(q.name)):
            os.unlink(segment_file(q.name))



@pytest.mark.slow
def test_two_producers_two_consumers_lose_only_what_dying_consumers_held_across_more_deaths_than_slots():
    # Mixed sizes and every operation; more deaths than the queue's 256 slots, as a long-lived
    # pool that respawns its workers would see (the dead ones' slots must be reaped).
    cfg = harness.Config(seed=random_seed(),
                         kills=260, producers=2, consumers=2, lock_fraction=0.2,
                         max_seq=1 << 22)  # producers put ~2M each over the 260 kills: room to spare
    check_run(cfg, ops=(("put",), ("put_many",), ("get",), ("get_many",), ("task_done",)))


def test_verdict_counts_duplicates_garbled_phantoms_and_losses_no_kill_accounts_for():
    # The harness checks itself: synthetic progress records, one of each outcome.
    cfg = harness.Config(producers=1, consumers=2, max_seq=64)
    sh = crash_workers.Shared(cfg)
    sh.progress.begin(0, 9)
    sh.progress.end(0, 9)  # puts of seqs 0..9 returned
    for c, seqs in ((0, [0, 1, 2, 4, 7, 8, 8]), (1, [5, 7, 12])):
        for s in seqs:
            sh.tally.counts[c][s] += 1
    sh.tally.garbled[1] = 1
    kills = [
        harness.Kill(0, "producer 0", "put", False, False, 0.0, False, hi=(3,), done=2),  # 3 was in flight
        harness.Kill(1, "consumer 1", "get", False, False, 0.0, False, taking=1, lo=(5,), hi=(9,)),  # took 6
    ]
    r = crash_analysis.analyse(cfg, sh, 0, "synthetic", 0.0, kills, {}, True, 0.0, [])
    assert (r.duplicated, r.garbled, r.phantom, r.lost, r.unattributed) == (2, 1, 1, 1, [(0, 9)])
    assert kills[1].lost == 1 and r.put_returned == 9
    assert len(r.violations) == 4, r.violations
