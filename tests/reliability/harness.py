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

Workers report through shared memory (RawArray), never through a queue, so what the
harness reads is exactly what a worker had finished when it died:
  - per producer: last seq in flight (written before put) and last seq whose put returned;
  - per consumer: how many items it is taking (written before get, cleared once the items
    are recorded), a count per (producer, seq) written right after get returns, and the
    highest seq recorded per producer.
Records are claimed in ring order and each producer's records are in seq order, so the
items a consumer killed while taking can have lost are, per producer, above the highest
seq any consumer had recorded before its get and at most the last seq in flight when it
died, and no more of them than it asked for. Every item whose put returned and that was
never delivered must fit one such kill; anything else is an unattributed loss.

At the end producers stop, the queue is closed, consumers drain it and leave, and join()
is called with a timeout: tasks taken by consumers that died are written off
(stats().written_off_tasks), so join() returns instead of waiting for them forever.

Long mode: python tests/reliability/harness.py --kills 1000 --producers 2 --consumers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import mmap
import os
import queue
import random
import re
import signal
import statistics
import struct
import sys
import time
import uuid
from multiprocessing.sharedctypes import RawArray

if __name__ == "__main__":  # run as a script from anywhere: the repo root holds sage_ext, tests/ support
    _tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [os.path.dirname(_tests), _tests]

from support import items

from sage_ext.sage_queue.python import _native
from sage_ext.sage_queue.python.sage_queue import (
    SEGMENT_DIR,
    SEGMENT_PREFIX,
    QueueClosed,
    SageQueue,
)

__all__ = ["Config", "Kill", "Result", "check_item", "main", "make_item", "run"]

# The lock word and ring positions, at the offsets the native module reports (checked
# against info() before every run all the same).
_LAYOUT = _native.LAYOUT
OFF_MUTEX = _LAYOUT["segment.mutex"] + _LAYOUT["mutex.lock"]
OFF_HEAD, OFF_READ, OFF_TAIL = (_LAYOUT["segment.c"] + _LAYOUT[f"counters.{n}"] for n in ("head", "read", "tail"))
MAGIC = _native.MAGIC
_U32 = struct.Struct("<I")
FUTEX_TID_MASK = 0x3FFFFFFF

# What a worker was doing, published before each call: read after its death.
PHASES = ("other", "start", "put", "put_many", "get", "get_many", "task_done")
OTHER, START, PUT, PUT_MANY, GET, GET_MANY, TASK_DONE = range(len(PHASES))

PUT_TIMEOUTS = (None, None, 0.05, 0.01)
GET_TIMEOUTS = (None, 0.05, 0.01, 0.0)


@dataclasses.dataclass
class Config:
    kills: int = 200
    producers: int = 2
    consumers: int = 2
    seed: int | None = None
    capacity_bytes: int = 4 << 20
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


@dataclasses.dataclass
class Kill:
    trial: int
    role: str  #: "producer 0", "consumer 1", ...
    phase: str  #: what it was doing (PHASES)
    targeted: bool  #: the killer tried to catch it holding the lock
    in_lock: bool  #: caught holding the lock by SIGSTOP, killed while stopped
    recovery: float  #: seconds until a worker completed an operation begun after the kill
    by_replacement: bool  #: that worker was the victim's replacement, not a survivor
    recovered_by: str = ""  #: that worker's role and what it completed
    taking: int = 0  #: consumer: items it asked for and had not recorded (its loss budget)
    lo: tuple = ()  #: consumer: per producer, highest seq recorded anywhere before its get
    hi: tuple = ()  #: per producer, last seq in flight when it died
    done: int = -1  #: producer: its last seq whose put returned; (done, hi[p]) was in flight
    at: float = 0.0  #: seconds into the run
    lost: int = 0  #: items attributed to this kill


@dataclasses.dataclass
class Result:
    config: Config
    seed: int
    name: str
    elapsed: float
    kills: list
    put_returned: int  #: items whose put returned (seq <= last returned, summed over producers)
    delivered: int
    lost: int  #: missing items attributed to consumers killed while taking them
    duplicated: int
    garbled: int
    unattributed: list  #: missing (producer, seq) no kill accounts for
    phantom: int  #: delivered items that were never put
    stats: dict
    join_returned: bool | None
    join_seconds: float
    slotless_workers: int  #: workers that found no slot of their own in the queue's table
    worker_errors: list
    violations: list

    @property
    def recoveries(self):
        return [k.recovery for k in self.kills]

    def summary(self) -> str:
        rec = sorted(self.recoveries) or [0.0]
        over = sum(r >= self.config.recovery_limit for r in rec)
        by_phase = {}
        for k in self.kills:
            by_phase[k.phase] = by_phase.get(k.phase, 0) + 1
        caught = sum(k.in_lock for k in self.kills)
        lossy = [k for k in self.kills if k.lost]
        s = self.stats
        c = self.config
        join = ("returned True" if self.join_returned else
                "timed out (False)" if self.join_returned is False else "not reached")
        lines = [
            (f"crash harness: {len(self.kills)} kills, {c.producers} producers / {c.consumers} consumers, "
             f"seed {self.seed}, {self.elapsed:.1f} s"),
            "  killed in: " + ", ".join(f"{p} {by_phase.get(p, 0)}" for p in PHASES),
            (f"  kills inside the lock: {caught} caught there by SIGSTOP "
             f"(of {sum(k.targeted for k in self.kills)} targeted); lock_recoveries {s.get('lock_recoveries')}"),
            (f"  items: put returned {self.put_returned}, delivered {self.delivered}, lost {self.lost} "
             f"(in {len(lossy)} consumer kills, at most {max((k.lost for k in lossy), default=0)} in one), "
             f"duplicated {self.duplicated}, garbled {self.garbled}, "
             f"unattributed loss {len(self.unattributed)}, phantom {self.phantom}"),
            (f"  records: abandoned {s.get('abandoned_records')} (dead producers mid-put), "
             f"reclaimed {s.get('reclaimed_records')} (dead consumers mid-get), "
             f"written_off_tasks {s.get('written_off_tasks')}"),
            (f"  recovery: worst {rec[-1] * 1e3:.1f} ms, median {statistics.median(rec) * 1e3:.1f} ms, "
             f"95th {rec[int(0.95 * (len(rec) - 1))] * 1e3:.1f} ms, "
             f">= {c.recovery_limit * 1e3:.0f} ms: {over}; first progress by the victim's replacement "
             f"in {sum(k.by_replacement for k in self.kills)}"),
            (f"  join(timeout={c.join_timeout:g}): {join} after {self.join_seconds * 1e3:.0f} ms; "
             f"unfinished_tasks {s.get('unfinished_tasks')}"),
            f"  workers without a slot in the queue's table: {self.slotless_workers}",
            "  result: " + ("OK" if not self.violations else "FAIL: " + "; ".join(self.violations)),
        ]
        return "\n".join(lines)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["unattributed"] = self.unattributed[:100]
        d["summary"] = self.summary()
        return d


# -- items: (producer, seq, crc32) in three encodings (tests/support/items.py) ----------------

_BLOCK = os.urandom((1 << 20) + 1)  # payloads are slices at random offsets: stale bytes never match


def make_item(p, s, size, rng):
    """Raw bytes, an in-band pickle or a pickle with an out-of-band part, at random."""
    start = rng.randrange(len(_BLOCK) - size)
    return items.make_item(p, s, _BLOCK[start:start + size], items.ENCODINGS[rng.randrange(3)])


def check_item(obj):
    """(producer, seq) of an intact item, None if it is garbled."""
    try:
        return items.check_item(obj)
    except ValueError:
        return None


def _item_size(rng, cfg):
    r = rng.random()
    if r < cfg.large_fraction:
        return rng.randint(64 << 10, cfg.max_item_bytes)
    if r < cfg.large_fraction + cfg.medium_fraction:
        return rng.randint(2 << 10, 64 << 10)
    return rng.randint(0, 2048)


# -- shared progress --------------------------------------------------------------------------


class _Shared:
    def __init__(self, cfg):
        P, C = cfg.producers, cfg.consumers
        W = P + C

        def q(n, init=0):
            a = RawArray("q", n)
            for i in range(n):
                a[i] = init
            return a

        self.epoch = q(1)  # number of kills so far, published right after each kill
        self.stop = q(1)  # producers: finish the current put and leave
        self.put_done = q(P, -1)  # last seq whose put returned
        self.put_hi = q(P, -1)  # last seq handed to a put (in flight or done)
        self.taking = q(C)  # items asked for and not yet recorded
        self.take_lo = q(C * P, -1)  # [c*P+p] highest seq of p recorded by anyone before c's get
        self.maxseen = q(C * P, -1)  # [c*P+p] highest seq of producer p recorded by consumer c
        self.counts = [RawArray("B", P * cfg.max_seq) for _ in range(C + 1)]  # +1: the final drain
        self.garbled = q(C + 1)
        self.phase = q(W)
        self.ack_epoch = q(W)  # last kill after which the worker began and completed an operation
        self.ack_time = RawArray("d", W)
        self.started = RawArray("d", W)  # when the current process of each role began
        self.slotless = q(W)
        self.errors = q(1)
        self.errmsg = RawArray("c", 2048)


def _ack(sh, role, epoch):
    if epoch > sh.ack_epoch[role]:
        sh.ack_time[role] = time.monotonic()
        sh.ack_epoch[role] = epoch


def _record_error(sh, text):
    sh.errors[0] += 1
    if not sh.errmsg.value:
        sh.errmsg.value = text.encode(errors="replace")[:2000]


def _produce(q, sh, cfg, p, role, rng):
    seq = max(sh.put_done[p], sh.put_hi[p]) + 1  # a dead predecessor's in-flight seqs may be delivered
    limit = cfg.capacity_bytes // 4
    while not sh.stop[0]:
        if seq + cfg.max_batch >= cfg.max_seq:
            time.sleep(0.01)
            continue
        many = rng.random() < 0.5
        n = rng.randint(2, cfg.max_batch) if many else 1
        items, total = [], 0
        for s in range(seq, seq + n):
            size = _item_size(rng, cfg)
            if items and total + size > limit:
                break
            items.append(make_item(p, s, size, rng))
            total += size
        last = seq + len(items) - 1
        sh.put_hi[p] = max(sh.put_hi[p], last)
        timeout = rng.choice(PUT_TIMEOUTS)
        epoch = sh.epoch[0]
        sh.phase[role] = PUT_MANY if many else PUT
        try:
            if many:
                q.put_many(items, timeout=timeout)
            else:
                q.put(items[0], timeout=timeout)
        except queue.Full:  # nothing was put: the same seqs go again
            sh.phase[role] = OTHER
            continue
        except QueueClosed:
            return
        sh.put_done[p] = last
        sh.phase[role] = OTHER
        _ack(sh, role, epoch)
        seq = last + 1


def _consume(q, sh, cfg, c, role, rng):
    P, C, N = cfg.producers, cfg.consumers, cfg.max_seq
    counts, maxseen = sh.counts[c], sh.maxseen
    while True:
        k = rng.randint(2, 2 * cfg.max_batch) if rng.random() < 0.5 else 1
        timeout = rng.choice(GET_TIMEOUTS)
        for p in range(P):  # what anyone recorded was claimed before anything this get claims
            sh.take_lo[c * P + p] = max(maxseen[cc * P + p] for cc in range(C))
        sh.taking[c] = k
        epoch = sh.epoch[0]
        sh.phase[role] = GET_MANY if k > 1 else GET
        try:
            got = q.get_many(k, timeout=timeout) if k > 1 else [q.get(timeout=timeout)]
        except queue.Empty:
            sh.taking[c] = 0
            sh.phase[role] = OTHER
            # Empty is an answer only when there is nothing to take: Empty while records wait
            # behind a dead producer's reservation is the stall this harness measures.
            if q.qsize() == 0:
                _ack(sh, role, epoch)
            continue
        except QueueClosed:
            sh.taking[c] = 0
            return
        except Exception as e:  # noqa: BLE001 - an item that does not unpickle is a garbled one
            sh.garbled[c] += 1
            _record_error(sh, f"consumer {c}: get raised {type(e).__name__}: {e}")
            sh.taking[c] = 0
            continue
        sh.phase[role] = OTHER
        for obj in got:
            ident = check_item(obj)
            if ident is None or ident[0] >= P or ident[1] >= N:
                sh.garbled[c] += 1
                continue
            p, s = ident
            i = p * N + s
            counts[i] = min(counts[i] + 1, 255)
            maxseen[c * P + p] = max(maxseen[c * P + p], s)
        sh.taking[c] = 0
        _ack(sh, role, epoch)
        sh.phase[role] = TASK_DONE
        for _ in got:
            q.task_done()
        sh.phase[role] = OTHER


def _worker(q, sh, cfg, role, seed):
    code = 0
    try:
        sh.started[role] = time.monotonic()
        sh.phase[role] = START
        rng = random.Random(seed)
        if os.getpid() not in {pid for pid, _ in q.info()["attached"]}:
            sh.slotless[role] += 1  # the fork hook found the slot table full
        sh.phase[role] = OTHER
        if role < cfg.producers:
            _produce(q, sh, cfg, role, role, rng)
        else:
            _consume(q, sh, cfg, role - cfg.producers, role, rng)
        q.detach()
    except BaseException as e:  # noqa: BLE001 - reported to the parent, never raised past fork
        _record_error(sh, f"{_role_name(cfg, role)}: {type(e).__name__}: {e}")
        code = 3
    finally:
        os._exit(code)


def _role_name(cfg, role):
    return f"producer {role}" if role < cfg.producers else f"consumer {role - cfg.producers}"


def _spawn(q, sh, cfg, role, seed):
    sh.phase[role] = START
    pid = os.fork()
    if pid == 0:
        _worker(q, sh, cfg, role, seed)  # never returns
    return pid


# -- the killer -------------------------------------------------------------------------------


class _LockView:
    """Read-only window on the segment's header: who holds the lock."""

    def __init__(self, q):
        with open(os.path.join(SEGMENT_DIR, SEGMENT_PREFIX + q.name), "rb") as f:
            self.mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        info = q.info()
        found = (self.mm[:8], *(struct.unpack_from("<Q", self.mm, o)[0] for o in (OFF_HEAD, OFF_READ, OFF_TAIL)),
                 self.owner())
        want = (MAGIC, info["head"], info["read"], info["tail"], 0)
        if found != want:
            raise RuntimeError(f"segment layout does not match _native.LAYOUT ({found} != {want})")

    def owner(self):
        return struct.unpack_from("<I", self.mm, OFF_MUTEX)[0] & FUTEX_TID_MASK

    def close(self):
        self.mm.close()


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
        if view.owner() == pid:
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


@dataclasses.dataclass
class _Run:
    """One run's moving parts, shared by its steps: start, kill loop, recovery wait, wind-down."""

    cfg: Config
    rng: random.Random
    sh: _Shared
    q: SageQueue
    view: _LockView
    pids: list
    t0: float
    kills: list = dataclasses.field(default_factory=list)
    violations: list = dataclasses.field(default_factory=list)

    def respawn(self, role):
        self.pids[role] = _spawn(self.q, self.sh, self.cfg, role, self.rng.randrange(1 << 63))

    def role_name(self, role):
        return _role_name(self.cfg, role)


def _start_workers(r: _Run):
    for role in range(len(r.pids)):
        r.respawn(role)
    P, W = r.cfg.producers, len(r.pids)
    deadline = time.monotonic() + 20
    while min(r.sh.put_done[p] for p in range(P)) < 10 or any(r.sh.phase[w] == START for w in range(W)):
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
                hi=tuple(sh.put_hi[p] for p in range(P)), at=t_kill - r.t0)
    if role < P:
        kill.done = sh.put_done[role]
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
                f"{rec[-1] * 1e3:.1f} ms; puts returned {sum(r.sh.put_done[p] + 1 for p in range(P))}")


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


def run(cfg: Config, log=None) -> Result:
    """One run; log(str) gets progress lines. Never raises for a queue failure: see .violations."""
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(1 << 32)
    name = cfg.name or f"crash-{os.getpid()}-{uuid.uuid4().hex[:10]}"
    if cfg.producers < 1 or cfg.consumers < 1:
        raise ValueError("a run needs at least one producer and one consumer")
    sh = _Shared(cfg)
    q = SageQueue(name, maxsize=cfg.maxsize, capacity_bytes=cfg.capacity_bytes)
    r = _Run(cfg, random.Random(seed), sh, q, _LockView(q), [0] * (cfg.producers + cfg.consumers), time.monotonic())
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
            os.unlink(os.path.join(SEGMENT_DIR, SEGMENT_PREFIX + name))
        except FileNotFoundError:
            pass

    return _analyse(cfg, sh, seed, name, time.monotonic() - r.t0, r.kills, stats, join_returned, join_seconds,
                    r.violations)


def _drain(q, sh, cfg):
    """What the consumers left behind, recorded as delivered by an extra consumer."""
    n, counts, N = 0, sh.counts[cfg.consumers], cfg.max_seq
    while True:
        try:
            got = q.get_many(1024, block=False)
        except (queue.Empty, QueueClosed):
            return n
        for obj in got:
            n += 1
            q.task_done()
            ident = check_item(obj)
            if ident is None or ident[0] >= cfg.producers or ident[1] >= N:
                sh.garbled[cfg.consumers] += 1
            else:
                counts[ident[0] * N + ident[1]] += 1


# -- verdict ---------------------------------------------------------------------------------

_NONZERO = bytes([0] + [1] * 255)
_MANY = bytes([0, 0] + [1] * 254)


def _positions(mask: bytes, lo=0, hi=None):
    return [m.start() for m in re.finditer(b"[^\x00]", mask[lo:hi])] if mask else []


def _match(missing, takers):
    """Assign missing items to kills whose window holds them, at most k.taking each, as many as
    possible (augmenting paths: a batch may mix producers, so greedy is not enough)."""
    held = {id(k): [] for k in takers}
    fits = {item: [k for k in takers if k.lo[item[0]] < item[1] <= k.hi[item[0]]] for item in missing}

    def place(item, seen):
        for k in fits[item]:
            if id(k) in seen:
                continue
            seen.add(id(k))
            if len(held[id(k)]) < k.taking:
                held[id(k)].append(item)
                return True
            for other in held[id(k)]:
                if place(other, seen):
                    held[id(k)].remove(other)
                    held[id(k)].append(item)
                    return True
        return False

    for item in missing:
        if fits[item]:
            place(item, set())
    return held


def _explain(item, takers):
    p, s = item
    near = [k for k in takers if k.lo[p] < s <= k.hi[p]]
    if not near:
        return f"{item}: no consumer died taking it"
    return f"{item}: it fits " + ", ".join(f"kill {k.trial} ({k.role}, asked {k.taking}, holds {k.lost})"
                                             for k in near[:4])


def _analyse(cfg, sh, seed, name, elapsed, kills, stats, join_returned, join_seconds, violations):
    P, N = cfg.producers, cfg.max_seq
    size = P * N
    arrays = [bytes(a) for a in sh.counts]
    masks = [int.from_bytes(a.translate(_NONZERO), "little") for a in arrays]
    dup = 0
    for a in arrays:  # the same consumer role twice
        dup += len(_positions(a.translate(_MANY)))
    for i in range(len(masks)):  # two roles
        for j in range(i + 1, len(masks)):
            both = masks[i] & masks[j]
            if both:
                dup += len(_positions(both.to_bytes(size, "little")))
    any_mask = 0
    for m in masks:
        any_mask |= m
    delivered_mask = any_mask.to_bytes(size, "little")
    delivered = sum(sum(a) for a in arrays)
    done = [sh.put_done[p] for p in range(P)]
    hi = [sh.put_hi[p] for p in range(P)]
    in_flight = set()  # seqs of puts that never returned: their producer died in them
    for k in kills:
        if k.role.startswith("producer"):
            p = int(k.role.split()[1])
            in_flight.update((p, s) for s in range(k.done + 1, k.hi[p] + 1))
    missing, phantom = [], 0
    for p in range(P):
        base = p * N
        seg = delivered_mask[base:base + done[p] + 1].translate(bytes([1] + [0] * 255))
        missing.extend((p, s) for s in _positions(seg) if (p, s) not in in_flight)
        phantom += len(_positions(delivered_mask, base + hi[p] + 1, base + N))

    # Each missing item must be one a consumer was taking when it died (see the module doc):
    # a matching of missing items to those kills, each kill holding at most what it asked for.
    takers = [k for k in kills if k.taking > 0]
    unattributed = []
    if len(missing) > 20000 and len(missing) > sum(k.taking for k in takers):
        unattributed = missing  # far more than every dying consumer could have held: skip matching
    else:
        held = _match(missing, takers)
        for k in takers:
            k.lost = len(held[id(k)])
        matched = {item for items in held.values() for item in items}
        unattributed = [item for item in missing if item not in matched]
    lost = len(missing) - len(unattributed)
    garbled = sum(sh.garbled[i] for i in range(cfg.consumers + 1))
    errors = [sh.errmsg.value.decode(errors="replace")] if sh.errors[0] else []

    if dup:
        violations.append(f"{dup} items delivered more than once")
    if garbled:
        violations.append(f"{garbled} garbled items delivered")
    if unattributed:
        violations.append(f"{len(unattributed)} items whose put returned were never delivered and no dying "
                          "consumer accounts for them: "
                          + "; ".join(_explain(item, takers) for item in unattributed[:3]))
    if phantom:
        violations.append(f"{phantom} delivered items were never put")
    if sh.errors[0]:
        violations.append(f"{sh.errors[0]} worker errors, first: {errors[0]}")
    slotless = sum(sh.slotless[r] for r in range(P + cfg.consumers))
    if slotless:
        violations.append(f"{slotless} workers forked after the deaths ran without a slot in the queue's table "
                          f"(the dead processes' slots were never reaped), so their tasks cannot be written off")
    if any(max(done[p], hi[p]) + cfg.max_batch + 1 >= N for p in range(P)):
        violations.append(f"a producer reached max_seq={N}: raise it, the run stopped producing")
    put_returned = sum(d + 1 for d in done) - sum(s <= done[p] for p, s in in_flight)
    return Result(cfg, seed, name, elapsed, kills, put_returned, delivered, lost, dup, garbled,
                  unattributed, phantom, stats, join_returned, join_seconds, slotless, errors, violations)


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
