"""Hostile-segment fuzzer: words of a live, attached queue overwritten, then every call made.

A trial creates a queue, fills it with a few items of every kind (small dicts through the
native codec, bytes, bytearray, pickles, pickles with two out-of-band buffers), takes some
without task_done, leaves one record claimed by a live consumer (us), then overwrites one
word of the shared header (magic, sizes, the mutex, counters, journal, futex words, slots)
or of a record (its header fields and the first words of its payload, which for
out-of-band pickles are the part-length table) with a hostile value, and calls every
operation. Words a wake-up depends on are also written while a thread sleeps in get() or
put() with no timeout; then a put (get) and if need be close() must wake it. Any Python
exception passes; a process killed by a signal (a crash) or a call that makes no progress
for HANG_SECONDS (a hang) fails.

Trials run in worker interpreters, many in a row; a worker reports each trial and each
call as it starts, so when one dies or stalls the parent names the exact trial, word,
value and call, and starts a new worker from the next trial.

    python tests/reliability/hostile_fuzz.py --trials N --seed S [--long] [--budget SECONDS]
    python tests/reliability/hostile_fuzz.py --seed S --trial T -v     # replay one trial

Trial t of seed S is fully determined by (S, t), except values taken from the running
system (pids, start times): the summary prints the concrete word and value. Offsets are
read from the native module (_native.LAYOUT) and checked against a live queue before any
trial.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import mmap
import os
import pickle
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import uuid

from hostile_words import (
    AT,
    BLOCKED_OPERATIONS,
    CLOCK_MONOTONIC_COARSE,
    COUNTERS,
    FUTEX_OWNER_DIED,
    FUTEX_WAITERS,
    HEADER_FIELDS,
    LAST_OPERATIONS,
    LAYOUT_VERSION,
    MAGIC,
    OPERATIONS,
    REC,
    RECORD_FIELDS,
    RECORD_HEADER,
    RING_AT,
    SEGMENT_DIR,
    SEGMENT_PREFIX,
    SLOT_AT,
    SLOT_COUNT,
    SLOT_FIELDS,
    SLOT_SIZE,
    SLOTS_AT,
    STATE,
    STATE_CLAIMED,
    STATE_PAD,
    combos,
)

__all__ = ["HEADER_FIELDS", "RECORD_FIELDS", "SLOT_FIELDS", "check_layout", "fuzz", "main"]

TIME_SCALE = float(os.environ.get("SAGE_TEST_TIME_SCALE", "1"))
# Detecting a corrupt lock word may take ~10 s for some values; a call silent for this long hangs.
HANG_SECONDS = 30.0 * TIME_SCALE
TRIALS_PER_WORKER = 100  # a refused detach keeps its mapping until the worker exits
CAPACITY = 256 * 1024
NAME_PREFIX = "hfuzz-"


# ---------------------------------------------------------------------------- the segment


def sq():
    from sage_ext.sage_queue.python import sage_queue

    return sage_queue


def segment_file(name):
    return os.path.join(SEGMENT_DIR, SEGMENT_PREFIX + name)


def u(mm, off, width):
    return int.from_bytes(mm[off:off + width], "little")


def ring_span(ring_pos, width, cap):
    """Segment offsets of `width` bytes from ring position `ring_pos`: a record's payload
    wraps past the ring's end to its start (a split copy), so one word may too."""
    return [RING_AT + (ring_pos + i) % cap for i in range(width)]


def read_span(mm, span):
    return int.from_bytes(bytes(mm[i] for i in span), "little")


def write_span(mm, span, value):
    for i, byte in zip(span, value.to_bytes(len(span), "little"), strict=True):
        mm[i] = byte


def check_layout(q, mm):
    """Fail loudly if the offsets do not describe the segment (a stale build, say)."""
    info = q.info()
    found = {"magic": bytes(mm[AT["magic"]:AT["magic"] + 8]), **{f: u(mm, AT[f], 8 if f != "version" else 4) for f in (
                 "version", "capacity", "ring_offset", "maxsize")},
             "creator_pid": u(mm, AT["creator_pid"], 4),
             "mutex.kind": u(mm, AT["mutex.kind"], 4) & 0x10 != 0,  # PTHREAD_MUTEX_ROBUST_NORMAL_NP
             **{f"c.{f}": u(mm, AT[f"c.{f}"], 8) for f in COUNTERS}}
    want = {"magic": MAGIC, "version": LAYOUT_VERSION, "capacity": info["capacity_bytes"], "ring_offset": RING_AT,
            "maxsize": info["maxsize"], "creator_pid": info["creator_pid"], "mutex.kind": True,
            **{f"c.{f}": info[f] for f in ("head", "read", "tail", "items")}, "c.unfinished": info["unfinished_tasks"],
            **{f"c.{f}": info["stats"][f] for f in COUNTERS[5:]}}
    if "layout_version" in info:
        found["build's layout_version"], want["build's layout_version"] = info["layout_version"], LAYOUT_VERSION
    bad = {k: (found[k], want[k]) for k in want if found[k] != want[k]}
    if not my_slot(mm) >= 0:
        bad["slots"] = "no slot holds this process's pid"
    if bad:
        raise RuntimeError(f"segment layout does not match _native.LAYOUT ({bad})")


def my_slot(mm):
    for i in range(SLOT_COUNT):
        if u(mm, SLOTS_AT + SLOT_SIZE * i + SLOT_AT["pid"], 4) == os.getpid():
            return i
    return -1


def records(mm, cap):
    """Records from head to tail: (ring position, state, tag, nparts, len)."""
    head, tail = u(mm, AT["c.head"], 8), u(mm, AT["c.tail"], 8)
    out, at = [], head
    while at < tail and len(out) < 10000:
        r = RING_AT + at % cap
        state, tag = u(mm, r + REC["state"], 4), mm[r + REC["tag"]]
        nparts, length = u(mm, r + REC["nparts"], 2), u(mm, r + REC["len"], 8)
        out.append((at, state, tag, nparts, length))
        at += cap - at % cap if state == STATE_PAD else -(-(RECORD_HEADER + length) // RECORD_HEADER) * RECORD_HEADER
    return out


def record_role(state, tag, nparts, native):
    if state == STATE_CLAIMED:
        return "claimed"
    if state == STATE["free"]:
        return "free"
    if state == STATE_PAD:
        return "pad"
    return {native.TAG_CODEC: "codec", native.TAG_BYTES: "bytes", native.TAG_BYTEARRAY: "bytearray"}.get(
        tag, "pickle_oob" if nparts > 1 else "pickle")


class Pickled:
    """An object that only pickle can carry."""

    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        return isinstance(other, Pickled) and other.n == self.n


def items_of_every_kind(rng):
    items = [{"k": rng.randrange(100), "s": "x" * rng.randrange(50)} for _ in range(3)]
    items += [os.urandom(rng.randrange(1, 300)) for _ in range(2)]
    items += [bytearray(os.urandom(rng.randrange(1, 300))) for _ in range(2)]
    items += [{1, 2, rng.randrange(100)}, complex(1, rng.random())]
    items += [[pickle.PickleBuffer(bytearray(5000)), pickle.PickleBuffer(bytearray(70000))] for _ in range(2)]
    rng.shuffle(items)
    return items


def forge_claim(mm, q, cap):
    """Claim the next committed record as get() does, and keep it: a live consumer mid-copy."""
    read = u(mm, AT["c.read"], 8)
    r = RING_AT + read % cap
    if u(mm, r + REC["state"], 4) != STATE["committed"]:
        return
    length = u(mm, r + REC["len"], 8)
    slot = SLOTS_AT + SLOT_SIZE * my_slot(mm)
    w = lambda off, width, v: mm.__setitem__(slice(off, off + width), v.to_bytes(width, "little"))  # noqa: E731
    w(r + REC["holder"], 4, os.getpid())
    w(r + REC["holder_start"], 4, u(mm, slot + SLOT_AT["start"], 8) & 0xFFFFFFFF)
    w(r + REC["stamp_ns"], 8, time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE))
    w(r + REC["state"], 4, STATE_CLAIMED)
    size = -(-(RECORD_HEADER + length) // RECORD_HEADER) * RECORD_HEADER
    w(AT["c.read"], 8, read + size)
    w(AT["c.items"], 8, u(mm, AT["c.items"], 8) - 1)
    w(AT["c.gets"], 8, u(mm, AT["c.gets"], 8) + 1)
    w(AT["c.bytes_got"], 8, u(mm, AT["c.bytes_got"], 8) + length)
    w(slot + SLOT_AT["outstanding"], 8, u(mm, slot + SLOT_AT["outstanding"], 8) + 1)


def hostile_value(kind, width, orig, dead_pid):
    bits = 8 * width
    mask = (1 << bits) - 1
    if kind in ("2**40", "2**62", "2**63") and width < 8:
        kind = {"2**40": "big", "2**62": "top_bit-1", "2**63": "top_bit"}[kind]
    v = {
        "ones": mask, "orig+1": orig + 1, "orig-1": orig - 1, "top_bit": 1 << (bits - 1), "big": mask >> 2,
        "top_bit-1": (1 << (bits - 1)) - 1, "my_pid": os.getpid(), "parent_pid": os.getppid(),
        "dead_pid": dead_pid, "my_pid|waiters": os.getpid() | FUTEX_WAITERS,
        "my_pid|owner_died": os.getpid() | FUTEX_OWNER_DIED,
    }.get(kind)
    if v is None:
        v = eval(kind)  # "0", "7", "2**40", ...: the names in VALUE_KINDS  # noqa: S307
    return v & mask


def a_dead_pid():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


# ---------------------------------------------------------------------------- one trial


def trial_plan(seed, trial, plan):
    """The words trial `trial` writes: one from the shuffled list of every (word, value),
    then, past the end of the list, two random ones."""
    rng = random.Random(f"{seed}:{trial}")
    if trial < len(plan):
        return rng, [plan[trial]]
    calls = [c for c in plan if c[2] == "calls"]
    return rng, [rng.choice(calls), rng.choice(calls)]


def run_trial(seed, trial, plan, report, dead_pid, verbose=False, call_seconds=None):
    """Set up a queue, write the trial's words, call everything. Returns {operation: outcome}.
    With call_seconds, no call starts once the trial's calls have taken that long (each call
    on a lock word naming a live process that is no user takes seconds to refuse)."""
    m = sq()
    rng, words = trial_plan(seed, trial, plan)
    mode = words[0][2]
    name = f"{NAME_PREFIX}{uuid.uuid4().hex[:16]}"
    report({"event": "trial", "trial": trial, "name": name})
    maxsize = 1 if mode == "blocked_put" else rng.choice([0, 0, 50])
    q = m.SageQueue(name, capacity_bytes=CAPACITY, maxsize=maxsize)
    path = segment_file(name)
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        mm = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    handles = [q]
    outcomes, written = {}, []
    try:
        check_layout(q, mm)
        cap = u(mm, AT["capacity"], 8)
        # Move the ring's start so the items wrap (a pad record) at different places.
        filler = rng.randrange(0, cap // 32 * 30, 32)
        if filler:
            q.put(bytes(max(0, filler - RECORD_HEADER)))
            q.get_nowait()
            q.task_done()
        if mode == "calls":
            for item in items_of_every_kind(rng):
                q.put(item, timeout=1)
            for _ in range(2):  # taken, no task_done: free records behind read, unfinished tasks
                q.get_nowait()
            forge_claim(mm, q, cap)
        else:
            blocked = start_blocked_caller(q, mode)
        recs = records(mm, cap)
        by_role = collections.defaultdict(list)
        for rec in recs:
            by_role[record_role(rec[1], rec[2], rec[3], m._native)].append(rec)
        mine = my_slot(mm)
        free_slots = [i for i in range(SLOT_COUNT) if u(mm, SLOTS_AT + SLOT_SIZE * i + SLOT_AT["pid"], 4) == 0]
        for (where, field, off, width, _kind), vkind, _mode in words:
            if where == "header":
                span = list(range(off, off + width))
            elif where.startswith("slot:"):
                base = SLOTS_AT + SLOT_SIZE * (mine if where == "slot:mine" else free_slots[0])
                span = list(range(base + off, base + off + width))
            else:
                role = where.split(":", 1)[1]
                candidates = by_role.get(role) or by_role.get("codec") or recs
                rec = rng.choice(candidates)
                where = f"record:{record_role(rec[1], rec[2], rec[3], m._native)}@{rec[0]}"
                span = ring_span(rec[0] + off, width, cap)
            orig = read_span(mm, span)
            value = hostile_value(vkind, width, orig, dead_pid)
            write_span(mm, span, value)
            written.append({"word": f"{where}.{field}", "offset": span[0], "width": width, "kind": vkind,
                            "value": value, "orig": orig})
        report({"event": "words", "trial": trial, "words": written})
        fail_on_purpose(trial)
        if mode != "calls":
            outcomes.update(wake_blocked_caller(q, mode, blocked, trial, report))
            return written, outcomes
        if verbose:
            for w in written:
                print(f"trial {trial}: wrote {w}", flush=True)

        ops = list(OPERATIONS)
        rng.shuffle(ops)
        reopened = []
        calls = {
            "put": lambda: q.put({"a": 1}, timeout=0.05),
            "put_nowait": lambda: q.put_nowait(b"x" * 40),
            "put_many": lambda: q.put_many([{"b": 2}, bytearray(9), Pickled(3)], timeout=0.05),
            "get": lambda: q.get(timeout=0.05),
            "get_nowait": lambda: q.get_nowait(),
            "get_many": lambda: q.get_many(8, timeout=0.05),
            "qsize": lambda: q.qsize(),
            "empty": lambda: q.empty(),
            "full": lambda: q.full(),
            "info": lambda: q.info(),
            "stats": lambda: q.stats(),
            "task_done": lambda: q.task_done(),
            "join": lambda: q.join(timeout=0.05),
            "open": lambda: reopened.append(m.SageQueue.open(name)),
            "open.get_nowait": lambda: reopened[0].get_nowait(),
            "open.info": lambda: reopened[0].info(),
            "close": lambda: q.close(),
            "detach": lambda: q.detach(),
            "open.destroy": lambda: reopened[0].destroy(),
        }
        calls_began = time.monotonic()
        for op in ops + LAST_OPERATIONS:
            if call_seconds is not None and time.monotonic() - calls_began > call_seconds:
                outcomes[op] = "not called (trial time cap)"
                continue
            if op.startswith("open.") and not reopened:
                outcomes[op] = "skipped"
                continue
            report({"event": "op", "trial": trial, "op": op})
            began = time.monotonic()
            try:
                calls[op]()
                outcomes[op] = "ok"
            except BaseException as exc:  # any Python exception passes
                if isinstance(exc, KeyboardInterrupt):
                    raise
                outcomes[op] = type(exc).__name__
            if verbose:
                print(f"trial {trial}: {op}: {outcomes[op]} ({time.monotonic() - began:.2f} s)", flush=True)
        handles += reopened
    finally:
        mm.close()
        for h in handles:
            try:
                h.detach()
            except Exception:
                pass
        remove_segment(name)
    return written, outcomes


def start_blocked_caller(q, mode):
    """A thread (not the main one: it sleeps without slices) blocked in get() on an empty
    queue or in put() on a full one, with no timeout. Returns (thread, its outcome list)."""
    import threading

    if mode == "blocked_put":
        q.put(b"full")
    result = []

    def call():
        try:
            result.append(("ok", q.get() if mode == "blocked_get" else q.put(b"more")))
        except Exception as exc:
            result.append((type(exc).__name__, None))

    t = threading.Thread(target=call, daemon=True)
    t.start()
    key, deadline = ("get" if mode == "blocked_get" else "put"), time.monotonic() + 10 * TIME_SCALE
    while q.info()["waiters"][key] < 1:
        if time.monotonic() > deadline or not t.is_alive():
            raise RuntimeError(f"the {mode} caller never went to sleep ({result})")
        time.sleep(0.001)
    return t, result


def wake_blocked_caller(q, mode, blocked, trial, report):
    """After the word: what should wake the blocked caller (a put for a getter, a get for a
    putter), then close() if it is still asleep. It must return; if it never does, the
    parent's no-progress limit reports the hang with the word and this step."""
    t, result = blocked
    what = "get" if mode == "blocked_get" else "put"
    report({"event": "op", "trial": trial, "op": f"{mode}: wake it with a {'put' if what == 'get' else 'get'}"})
    try:
        q.put(b"wake") if what == "get" else q.get_nowait()
        release = "ok"
    except Exception as exc:
        release = type(exc).__name__
    t.join(2 * TIME_SCALE)
    woken = "by the " + ("put" if what == "get" else "get")
    if t.is_alive():
        report({"event": "op", "trial": trial, "op": f"{mode}: close() to wake it (the {release} release did not)"})
        try:
            q.close()
        except Exception:
            pass
        t.join()
        woken = "by close() only" if release == "ok" else "by close()"
    return {f"{mode}.release": release, mode: f"{result[0][0]}, woken {woken}"}


def fail_on_purpose(trial):
    """$SAGE_HFUZZ_SELFTEST="crash@T" or "hang@T": the worker dies or stalls in trial T, so
    the fuzzer's own tests can check that it names the trial and goes on after it."""
    what, _, at = os.environ.get("SAGE_HFUZZ_SELFTEST", "").partition("@")
    if at and int(at) == trial:
        if what == "crash":
            os.kill(os.getpid(), signal.SIGABRT)  # not SIGSEGV: a sanitizer build would report it
        while what == "hang":
            time.sleep(1)


def remove_segment(name):
    if not name.startswith(NAME_PREFIX):  # only the names this fuzzer made
        return
    try:
        os.unlink(segment_file(name))
    except FileNotFoundError:
        pass


def worker(seed, first, last, fd, verbose, deadline=None, call_seconds=None):
    """Run trials first..last-1 (none started after `deadline`, a time.monotonic() value:
    the clock is system-wide), one JSON line per event on fd."""
    import faulthandler

    faulthandler.enable()
    out = os.fdopen(fd, "w", buffering=1)
    plan = shuffled_plan(seed)
    dead_pid = a_dead_pid()

    def report(msg):
        out.write(json.dumps(msg) + "\n")

    for trial in range(first, last):
        if deadline is not None and time.monotonic() > deadline:
            break
        try:
            written, outcomes = run_trial(seed, trial, plan, report, dead_pid, verbose, call_seconds)
        except Exception:  # the fuzzer's own failure (calls catch everything): stop the run
            import traceback

            report({"event": "error", "trial": trial, "traceback": traceback.format_exc()})
            out.flush()
            os._exit(3)
        report({"event": "done", "trial": trial, "outcomes": outcomes})
        gc.collect()  # the trial's handles, whose detach may have been refused: unmapped now
    out.flush()
    os._exit(0)  # no atexit detach of handles a corrupt segment left attached


def shuffled_plan(seed):
    plan = combos()
    random.Random(seed).shuffle(plan)
    return plan


# ---------------------------------------------------------------------------- the parent


def fuzz(seed, trials, first=0, budget=None, verbose=False, log=print, hang_seconds=HANG_SECONDS, env=None,
         call_seconds=None):
    """Run trials first..first+trials-1 in workers; returns the summary dict. No trial starts
    after `budget` seconds; no call of a trial starts after its calls took `call_seconds`."""
    start = time.monotonic()
    end = first + trials
    summary = {"seed": seed, "trials": 0, "words": 0, "outcomes": collections.defaultdict(collections.Counter),
               "crashes": [], "hangs": [], "slowest": [], "combos": len(combos())}
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root(), env.get("PYTHONPATH")]))
    nxt = first
    while nxt < end and not (budget and time.monotonic() - start > budget):
        last = min(end, nxt + TRIALS_PER_WORKER)
        rfd, wfd = os.pipe()
        err = tempfile.TemporaryFile()
        argv = [sys.executable, os.path.abspath(__file__), "--worker", "--seed", str(seed), "--first", str(nxt),
                "--last", str(last), "--fd", str(wfd)] + (["-v"] if verbose else [])
        if budget:
            argv += ["--deadline", repr(start + budget)]
        if call_seconds is not None:
            argv += ["--call-seconds", repr(call_seconds)]
        proc = subprocess.Popen(argv, pass_fds=[wfd], env=env, stderr=err, stdout=None if verbose else subprocess.DEVNULL)
        os.close(wfd)
        state = {"trial": nxt - 1, "name": None, "op": "setup", "words": [], "done": True}
        buf, progress = b"", time.monotonic()
        failure = None
        while True:
            ready, _, _ = select.select([rfd], [], [], 1.0)
            if ready:
                chunk = os.read(rfd, 65536)
                if not chunk:
                    break
                progress = time.monotonic()
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    ev = msg["event"]
                    if ev == "trial":
                        state = {"trial": msg["trial"], "name": msg["name"], "op": "setup", "words": [],
                                 "done": False, "start": time.monotonic()}
                    elif ev == "words":
                        state["words"], state["op"] = msg["words"], "(before the first call)"
                        summary["words"] += len(msg["words"])
                    elif ev == "op":
                        state["op"] = msg["op"]
                    elif ev == "error":
                        os.kill(proc.pid, 9)
                        proc.wait()
                        if state["name"]:
                            remove_segment(state["name"])
                        raise RuntimeError(f"fuzzer error in trial {msg['trial']} (seed {seed}):\n{msg['traceback']}")
                    elif ev == "done":
                        state["done"] = True
                        summary["trials"] += 1
                        took = time.monotonic() - state["start"]
                        slow = summary["slowest"]
                        slow.append({"seed": seed, "trial": msg["trial"], "seconds": took, "words": state["words"],
                                     "op": "-", "status": "passed"})
                        slow.sort(key=lambda e: -e["seconds"])
                        del slow[5:]
                        for op, outcome in msg["outcomes"].items():
                            summary["outcomes"][op][outcome] += 1
            elif time.monotonic() - progress > hang_seconds:
                os.kill(proc.pid, 9)
                failure = "hangs"
                break
        os.close(rfd)
        rc = proc.wait()
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        err.close()
        if failure is None and not state["done"]:
            failure = "crashes"
        if failure:
            summary["trials"] += 1
            entry = {"seed": seed, "trial": state["trial"], "words": state["words"], "op": state["op"],
                     "status": f"signal {-rc}" if rc < 0 else f"exit {rc}",
                     "stderr": stderr[-3000:]}
            summary[failure].append(entry)
            log(f"{failure[:-1].upper()}: {describe(entry)}")
            if state["name"]:
                remove_segment(state["name"])
            nxt = state["trial"] + 1
        elif rc != 0:
            raise RuntimeError(f"fuzz worker failed outside any trial (exit {rc}):\n{stderr[-3000:]}")
        else:
            nxt = last if state["trial"] == last - 1 else end  # stopped early: the budget is spent
    summary["elapsed"] = time.monotonic() - start
    return summary


def package_root():
    """Where workers import sage_ext from: where we do (tox: a site-packages), else this tree."""
    try:
        import sage_ext
    except ImportError:
        return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.dirname(os.path.dirname(os.path.abspath(sage_ext.__file__)))


def describe(entry):
    words = "; ".join(f"{w['word']} (offset {w['offset']}, {w['width']} bytes) = {w['value']:#x} "
                      f"[{w['kind']}, was {w['orig']:#x}]" for w in entry["words"]) or "(before any word was written)"
    during = f"; during {entry['op']} ({entry['status']})" if entry["op"] != "-" else ""
    return (f"seed {entry['seed']} trial {entry['trial']}: {words}{during}; "
            f"replay: python {os.path.relpath(__file__)} --seed {entry['seed']} --trial {entry['trial']} -v")


def format_summary(s):
    lines = [f"hostile fuzz: seed {s['seed']}, {s['trials']} trials, {s['words']} words written "
             f"({s['combos']} word/value pairs in one pass), {s['elapsed']:.0f} s",
             "outcomes per operation:"]
    for op in OPERATIONS + LAST_OPERATIONS + BLOCKED_OPERATIONS:
        counts = s["outcomes"].get(op)
        if counts:
            lines.append(f"  {op:16} " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    lines.append("slowest trials:")
    lines += [f"  {e['seconds']:.1f} s: {describe(e)}" for e in s["slowest"]]
    lines.append(f"crashes: {len(s['crashes'])}, hangs: {len(s['hangs'])}")
    for kind in ("crashes", "hangs"):
        for e in s[kind]:
            lines.append(f"  {kind[:-1]}: {describe(e)}")
            tail = [ln for ln in e["stderr"].splitlines() if ln.strip()][-12:]
            lines += [f"      | {ln}" for ln in tail]
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, help="trials to run (default 300, with --long two passes over "
                   "every word/value pair)")
    p.add_argument("--seed", type=int, help="default: random, printed")
    p.add_argument("--long", action="store_true", help="long mode: past one pass, trials write two words")
    p.add_argument("--trial", type=int, help="replay only this trial")
    p.add_argument("--first", type=int, default=0, help="first trial number")
    p.add_argument("--budget", type=float, help="start no trial after this many seconds")
    p.add_argument("-v", "--verbose", action="store_true", help="print every word written and every call")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--last", type=int, help=argparse.SUPPRESS)
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--call-seconds", type=float, help="start no call of a trial after its calls took this long")
    a = p.parse_args(argv)
    if a.worker:
        worker(a.seed, a.first, a.last, a.fd, a.verbose, a.deadline, a.call_seconds)
        return 0
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 32)
    print(f"hostile fuzz seed {seed}", flush=True)
    if a.trial is not None:
        first, trials = a.trial, 1
    else:
        first, trials = a.first, a.trials or (2 * len(combos()) if a.long else 300)
    s = fuzz(seed, trials, first=first, budget=a.budget, verbose=a.verbose, call_seconds=a.call_seconds)
    print(format_summary(s), flush=True)
    return 1 if s["crashes"] or s["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
