"""Crash harness for SageQueue: producers and consumers SIGKILLed at random moments.

One run is one queue, P producer and C consumer processes (plain os.fork children of
this process, using the handle they inherit) and a killer loop here. Each trial kills
one random worker, either at a random moment or, for a fraction of trials, after
SIGSTOPping it until it is caught holding the queue's lock (the robust mutex's owner
word is its tid), and forks a replacement of the same role; producers' sequence numbers
go on where the dead one left off. Then it waits for recovery: the first operation that
started after the kill and completed (an item for a consumer, or Empty with nothing queued;
a put that returned for a producer) in a survivor, or in the replacement counted from its first
instruction (with one of each role, a producer facing a full ring can only wait for the
new consumer; fork and scheduling delays are not the queue's).

The workers (crash_workers.py) report through shared memory, never through a queue, so
what the harness reads is exactly what a worker had finished when it died; the verdict
(crash_analysis.py) accounts for every item put against what the consumers recorded.

At the end producers stop, the queue is closed, consumers drain it and leave, and join()
is called with a timeout: tasks taken by consumers that died are written off
(stats().written_off_tasks), so join() returns instead of waiting for them forever.

Long mode: python tests/reliability/harness.py --kills 1000 --producers 2 --consumers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import queue
import random
import signal
import struct
import sys
import time
import uuid

if __name__ == "__main__":  # run as a script from anywhere: the repo root holds sage_ext, tests/ support
    _tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [os.path.dirname(_tests), _tests]

from crash_analysis import Kill, Result, analyse
from crash_workers import PHASES, START, Shared, role_name, spawn

from sage_ext.sage_queue.python.sage_queue import QueueClosed, SageQueue

from conftest import segment_file
from segment_layout import FUTEX_TID_MASK, LAYOUT, SegmentView, field, watch

__all__ = ["Config", "Kill", "Result", "main", "run"]

OFF_MUTEX = field("segment.mutex") + LAYOUT["mutex.lock"]  # the lock word, read in a tight loop
_U32 = struct.Struct("<I")


@dataclasses.dataclass
class Config:
    kills: int = 200
    producers: int = 2
    consumers: int = 2
    seed: int | None = None
    capacity_bytes: int = 4 << 20  #: half the default: the ring fills and wraps under the kills
    maxsize: int = 0
    max_item_bytes: int = 256 << 10  #: the largest payload; large items make kills land mid-copy
    large_fraction: float = 0.05  #: items of 64 KiB .. max_item_bytes
    medium_fraction: float = 0.15  #: items of 2 .. 64 KiB; the rest are 0 .. 2 KiB
    max_batch: int = 8  #: put_many batch sizes 2..max_batch; get_many asks for 2..2*max_batch
    lock_fraction: float = 0.3  #: trials that SIGSTOP the victim until it holds the lock
    catch_budget: float = 2.0  #: seconds to try catching it there before killing it anyway
    kill_gap: float = 0.015  #: random pause (0..kill_gap s) between recovery and the next kill
    start_kill_fraction: float = 0.1  #: trials that may kill a replacement before it got going
    max_seq: int = 1 << 21  #: per producer; producers pause when they reach it
    recovery_limit: float = 0.1  #: "survivors make progress within 100 ms"
    stall_limit: float = 2.0  #: give up waiting for recovery after this long (a violation)
    join_timeout: float = 10.0
    name: str | None = None


# -- the lock, watched from outside ------------------------------------------------------------


def watch_lock(q) -> SegmentView:
    """q's segment mapped beside it, checked against info() and with no lock holder yet."""
    view = watch(q)
    if view.lock_owner() != 0:
        view.close()
        raise RuntimeError(f"an idle queue's lock word names owner {view.lock_owner()}: the offset is wrong")
    return view


def _catch_inside_lock(pid, view, rng, budget):
    """SIGSTOP pid until it is stopped holding the lock: True (left stopped), False (budget
    spent, left running) or None (it exited on its own; reaped)."""
    deadline = time.monotonic() + budget
    word, mm, clock, kill, stop = _U32.unpack_from, view.mm, time.perf_counter, os.kill, signal.SIGSTOP
    while time.monotonic() < deadline:
        # Stop it the moment the owner word names it: sections last about a microsecond and the
        # victim holds the lock ~0.2% of the time, so blind stops land there only 1 in ~500.
        until = clock() + rng.uniform(0.01, 0.05)
        n = 0
        while word(mm, OFF_MUTEX)[0] & FUTEX_TID_MASK != pid:
            n += 1
            if not n & 255 and clock() > until:
                break
        kill(pid, stop)
        _, status = os.waitpid(pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            return None
        if view.lock_owner() == pid:
            return True
        os.kill(pid, signal.SIGCONT)
    return False


def _pause(seconds):
    if seconds > 0.001:
        time.sleep(seconds)
    else:  # sleep() would round up to its ~60 us floor
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass


def _exited(pid):
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done != 0


def _wait_exit(pid, timeout):
    deadline = time.monotonic() + timeout
    while not _exited(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


# -- the run: start, kill loop (one kill, then the recovery wait), wind-down ----------------------


@dataclasses.dataclass
class _Run:
    """One run's moving parts, shared by its steps: start, kill loop, recovery wait, wind-down."""

    cfg: Config
    rng: random.Random
    sh: Shared
    q: SageQueue
    view: SegmentView
    pids: list
    t0: float
    kills: list = dataclasses.field(default_factory=list)
    violations: list = dataclasses.field(default_factory=list)

    def respawn(self, role):
        self.pids[role] = spawn(self.q, self.sh, self.cfg, role, self.rng.randrange(1 << 63))

    def role_name(self, role):
        return role_name(self.cfg, role)


def _start_workers(r: _Run):
    for role in range(len(r.pids)):
        r.respawn(role)
    P, W = r.cfg.producers, len(r.pids)
    deadline = time.monotonic() + 20
    while min(r.sh.progress.returned(p) for p in range(P)) < 10 or any(r.sh.phase[w] == START for w in range(W)):
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not get going within 20 s")
        time.sleep(0.001)


def _kill_one(r: _Run, trial):
    """Kills one worker (first stopped inside the lock, if this trial targets it) and starts its
    replacement: (the Kill, its role, when, the epoch from which calls count as recovery), or
    None if the victim left by itself first."""
    cfg, sh, rng = r.cfg, r.sh, r.rng
    P, W = cfg.producers, len(r.pids)
    for role in range(W):  # a worker that left on its own hit an error
        if _exited(r.pids[role]):
            r.violations.append(f"{r.role_name(role)} exited by itself before trial {trial}")
            r.respawn(role)
    if rng.random() >= cfg.start_kill_fraction:  # mostly kill workers that are under way
        deadline = time.monotonic() + 2
        while any(sh.phase[w] == START for w in range(W)) and time.monotonic() < deadline:
            time.sleep(0.0002)
    role = rng.randrange(W)
    pid = r.pids[role]
    caught = False
    targeted = rng.random() < cfg.lock_fraction
    if targeted:
        caught = _catch_inside_lock(pid, r.view, rng, cfg.catch_budget)
        if caught is None:
            r.violations.append(f"{r.role_name(role)} exited by itself in trial {trial}")
            r.respawn(role)
            return None
    else:
        _pause(rng.uniform(0, cfg.kill_gap))
    os.kill(pid, signal.SIGKILL)
    t_kill = time.monotonic()
    sh.epoch[0] = epoch = trial + 1  # operations begun from now on count as recovery
    os.waitpid(pid, 0)
    kill = Kill(trial, r.role_name(role), PHASES[sh.phase[role]], targeted, bool(caught), 0.0, False,
                hi=tuple(sh.progress.handed(p) for p in range(P)), at=t_kill - r.t0)
    if role < P:
        kill.done = sh.progress.returned(role)
    else:
        c = role - P
        kill.taking = sh.taking[c]
        kill.lo = tuple(sh.take_lo[c * P + p] for p in range(P))
        sh.taking[c] = 0
    r.respawn(role)
    return kill, role, t_kill, epoch


def _wait_recovery(r: _Run, kill, role, t_kill, epoch):
    """Waits for the first call begun after the kill to complete, in any worker (the victim's
    replacement counts from its start): the kill's recovery time, or a violation."""
    cfg, sh = r.cfg, r.sh
    first = None
    while first is None and time.monotonic() - t_kill < cfg.stall_limit:
        done = [(sh.ack_time[w] - (max(t_kill, sh.started[w]) if w == role else t_kill), w)
                for w in range(len(r.pids)) if sh.ack_epoch[w] >= epoch]
        if done:
            first = min(done)
        else:
            time.sleep(0.0002)
    if first is None:
        kill.recovery = cfg.stall_limit
        r.violations.append(f"no worker made progress within {cfg.stall_limit:g} s after kill {kill.trial} "
                            f"({kill.role} in {kill.phase})")
    else:
        kill.recovery = max(0.0, first[0])
        kill.by_replacement = first[1] == role
        kill.recovered_by = r.role_name(first[1]) + (" (the replacement)" if first[1] == role else "")


def _kill_loop(r: _Run, log):
    P = r.cfg.producers
    for trial in range(r.cfg.kills):
        killed = _kill_one(r, trial)
        if killed is None:
            continue
        kill = killed[0]
        _wait_recovery(r, *killed)
        r.kills.append(kill)
        if log and (trial + 1) % 100 == 0:
            rec = sorted(k.recovery for k in r.kills[-100:])
            log(f"  {trial + 1} kills, {time.monotonic() - r.t0:.1f} s; last 100: worst recovery "
                f"{rec[-1] * 1e3:.1f} ms; puts returned {sum(r.sh.progress.returned(p) + 1 for p in range(P))}")


def _wind_down(r: _Run):
    """Producers finish, the queue closes, consumers drain it and leave; then join().
    Returns (join returned, its seconds, the queue's stats)."""
    cfg, sh, q = r.cfg, r.sh, r.q
    P, W = cfg.producers, len(r.pids)
    sh.stop[0] = 1
    for role in range(P):
        if not _wait_exit(r.pids[role], 10):
            r.violations.append(f"{r.role_name(role)} still in {PHASES[sh.phase[role]]} 10 s after stop")
            os.kill(r.pids[role], signal.SIGKILL)
            os.waitpid(r.pids[role], 0)
    q.close()
    for role in range(P, W):
        if not _wait_exit(r.pids[role], 20):
            r.violations.append(f"{r.role_name(role)} still in {PHASES[sh.phase[role]]} 20 s after close()")
            os.kill(r.pids[role], signal.SIGKILL)
            os.waitpid(r.pids[role], 0)
    r.pids[:] = [0] * W
    left = _drain(q, sh, cfg)
    if left:
        r.violations.append(f"{left} items left in the queue after the consumers drained it and left")
    t_join = time.monotonic()
    join_returned = q.join(timeout=cfg.join_timeout)
    join_seconds = time.monotonic() - t_join
    st = q.stats()
    stats = {f.name: getattr(st, f.name) for f in dataclasses.fields(st)}
    if not join_returned:
        r.violations.append(f"join() timed out after {cfg.join_timeout:g} s with {st.unfinished_tasks} "
                            f"unfinished tasks (written off: {st.written_off_tasks})")
    return join_returned, join_seconds, stats


def _drain(q, sh, cfg):
    """What the consumers left behind, recorded as delivered by an extra consumer."""
    n = 0
    while True:
        try:
            got = q.get_many(1024, block=False)
        except (queue.Empty, QueueClosed):
            return n
        n += len(got)
        for _ in got:
            q.task_done()
        sh.tally.record(cfg.consumers, got)


def run(cfg: Config, log=None) -> Result:
    """One run; log(str) gets progress lines. Never raises for a queue failure: see .violations."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 32)
    name = cfg.name or f"crash-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    if cfg.producers < 1 or cfg.consumers < 1:
        raise ValueError("a run needs at least one producer and one consumer")
    sh = Shared(cfg)
    q = SageQueue(name, maxsize=cfg.maxsize, capacity_bytes=cfg.capacity_bytes)
    r = _Run(cfg, random.Random(seed), sh, q, watch_lock(q), [0] * (cfg.producers + cfg.consumers), time.monotonic())
    join_returned, join_seconds, stats = None, 0.0, {}
    try:
        _start_workers(r)
        _kill_loop(r, log)
        join_returned, join_seconds, stats = _wind_down(r)
    finally:
        for pid in r.pids:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
        r.view.close()
        if q.attached:
            q.destroy()
        try:
            os.unlink(segment_file(name))
        except FileNotFoundError:
            pass

    return analyse(cfg, sh, seed, name, time.monotonic() - r.t0, r.kills, stats, join_returned, join_seconds,
                   r.violations)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--consumers", type=int, default=2)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--capacity-bytes", type=int, default=Config.capacity_bytes)
    ap.add_argument("--maxsize", type=int, default=0)
    ap.add_argument("--max-item-bytes", type=int, default=Config.max_item_bytes)
    ap.add_argument("--large-fraction", type=float, default=Config.large_fraction)
    ap.add_argument("--medium-fraction", type=float, default=Config.medium_fraction)
    ap.add_argument("--lock-fraction", type=float, default=Config.lock_fraction)
    ap.add_argument("--kill-gap", type=float, default=Config.kill_gap, help="max pause between kills, seconds")
    ap.add_argument("--max-seq", type=int, help="seqs per producer (default: 8000 per kill, at least 2**20)")
    ap.add_argument("--json", metavar="PATH", help="write the figures and every kill there")
    a = ap.parse_args(argv)
    cfg = Config(kills=a.kills, producers=a.producers, consumers=a.consumers, seed=a.seed,
                 capacity_bytes=a.capacity_bytes, maxsize=a.maxsize, max_item_bytes=a.max_item_bytes,
                 large_fraction=a.large_fraction, medium_fraction=a.medium_fraction,
                 lock_fraction=a.lock_fraction, kill_gap=a.kill_gap,
                 max_seq=a.max_seq or max(1 << 20, 8000 * a.kills))
    result = run(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(result.summary(), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result.to_json(), f, indent=1)
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
