"""The words the hostile-segment fuzzer (hostile_fuzz.py) writes: every field of a queue's
shared header, of a user slot and of a record, with the hostile values for each, and the
(word, value, mode) plan a seed shuffles. Every offset comes from the native module
(_native.LAYOUT): none is typed here.
"""

from __future__ import annotations

import time

try:
    from sage_ext.sage_queue.python import _native
except ImportError:  # no native build: nothing to fuzz (the suite skips the test)
    _native = None
PID = "pid"  # field kind: a pid or thread id, so pids of live and dead processes are tried too

COUNTERS = ["head", "read", "tail", "items", "unfinished", "puts", "gets", "bytes_put", "bytes_got",
             "abandoned_records", "reclaimed_records", "written_off_tasks", "lock_recoveries"]
_SLOT = [("pid", 4, PID), ("flags", 4, ""), ("start", 8, ""), ("pidns", 8, ""), ("outstanding", 8, "")]


def _layout():
    """(name, offset, width in bytes, kind) of the header's, a slot's and a record's words."""
    if _native is None:
        return [], [], []
    lay = _native.LAYOUT

    def counter(base, f):
        return base + (lay[f"counters.{f}"] if f in COUNTERS[:5] else lay["counters.stats"] + lay[f"stats.{f}"])

    seg = {k[len("segment."):]: v for k, v in lay.items() if k.startswith("segment.")}
    mutex, c, j = seg["mutex"], seg["c"], seg["journal"]
    header = [(n, seg[n], w, kind) for n, w, kind in (
        ("magic", 8, ""), ("version", 4, ""), ("header_bytes", 4, ""), ("capacity", 8, ""), ("maxsize", 8, ""),
        ("ring_offset", 8, ""), ("total_bytes", 8, ""), ("persistent", 4, ""), ("creator_pid", 4, PID),
        ("ready", 4, ""), ("closed", 4, ""), ("unlinked", 4, ""))]
    # glibc pthread_mutex_t: __lock, __count, __owner, __nusers, __kind, __spins+__elision, __list
    header += [(f"mutex.{n}", mutex + lay[f"mutex.{n}"], 4, kind) for n, kind in (
        ("lock", PID), ("count", ""), ("owner", PID), ("nusers", ""), ("kind", ""), ("spins", ""))]
    header += [("mutex.list_prev", mutex + lay["mutex.list"], 8, ""), ("mutex.list_next", mutex + lay["mutex.list"] + 8, 8, "")]
    header += [(f"c.{f}", counter(c, f), 8, "") for f in COUNTERS]
    header += [("journal.active", j + lay["journal.active"], 4, ""), ("journal.slot_index", j + lay["journal.slot_index"], 4, "")]
    header += [(f"journal.saved.{f}", counter(j + lay["journal.saved"], f), 8, "") for f in COUNTERS]
    header += [(f"journal.saved_slot.{n}", j + lay["journal.saved_slot"] + lay[f"slot_copy.{n}"], w, kind)
               for n, w, kind in _SLOT]
    header += [(n, seg[n], 4, "") for n in (
        "not_empty_seq", "not_empty_sleepers", "not_full_seq", "not_full_sleepers", "join_seq", "join_sleepers")]
    slot = [(n, lay[f"slot.{n}"], w, kind) for n, w, kind in _SLOT]
    payload = lay["record.size"]  # the payload's first words: the part-length table of an out-of-band pickle
    record = [("state", lay["record.state"], 4, ""), ("tag", lay["record.tag"], 1, ""),
              ("unused", lay["record.unused0"], 1, ""), ("nparts", lay["record.nparts"], 2, ""),
              ("holder", lay["record.holder"], 4, PID), ("holder_start", lay["record.holder_start"], 4, ""),
              ("len", lay["record.len"], 8, ""), ("stamp_ns", lay["record.stamp_ns"], 8, ""),
              ("payload[0]", payload, 8, ""), ("payload[0].lo", payload, 4, ""), ("payload[1]", payload + 8, 8, ""),
              ("payload[2]", payload + 16, 8, ""), ("payload[3]", payload + 24, 8, "")]
    return header, slot, record


HEADER_FIELDS, SLOT_FIELDS, RECORD_FIELDS = _layout()
AT = {name: off for name, off, _, _ in HEADER_FIELDS}  # header word -> offset
SLOT_AT = {name: off for name, off, _, _ in SLOT_FIELDS}  # slot word -> offset in a slot
REC = {name: off for name, off, _, _ in RECORD_FIELDS}  # record word -> offset in a record
if _native is not None:
    SEGMENT_DIR, SEGMENT_PREFIX = _native.SEGMENT_DIR, _native.SEGMENT_PREFIX
    MAGIC, LAYOUT_VERSION = _native.MAGIC, _native.LAYOUT_VERSION
    SLOTS_AT, SLOT_SIZE, SLOT_COUNT = _native.LAYOUT["segment.slots"], _native.LAYOUT["slot.size"], _native.LAYOUT["slot.count"]
    RING_AT = _native.LAYOUT["segment.ring"]
    RECORD_HEADER = _native.LAYOUT["record.size"]  # also the records' alignment
    STATE_NAMES = {_native.LAYOUT[f"record.state.{n}"]: n
                   for n in ("reserved", "committed", "claimed", "free", "pad", "abandoned")}
else:
    SEGMENT_DIR, SEGMENT_PREFIX, MAGIC, LAYOUT_VERSION = "", "", b"", 0
    SLOTS_AT = SLOT_SIZE = SLOT_COUNT = RING_AT = RECORD_HEADER = 0
    STATE_NAMES = {}
STATE = {n: v for v, n in STATE_NAMES.items()}
STATE_CLAIMED, STATE_PAD = STATE.get("claimed"), STATE.get("pad")
SLOT_ROLES = ["mine", "next_free"]
RECORD_ROLES = ["codec", "bytes", "bytearray", "pickle", "pickle_oob", "claimed", "free", "pad"]

VALUE_KINDS = ["0", "1", "7", "32", "33", "4096", "2**40", "2**62", "2**63", "ones", "orig+1", "orig-1",
               "top_bit"]
PID_KINDS = ["my_pid", "parent_pid", "dead_pid", "my_pid|waiters", "my_pid|owner_died"]
FUTEX_WAITERS, FUTEX_OWNER_DIED = 0x80000000, 0x40000000
CLOCK_MONOTONIC_COARSE = getattr(time, "CLOCK_MONOTONIC_COARSE", 6)  # the clock of record stamps (Linux)

BLOCKED_OPERATIONS = ["blocked_get.release", "blocked_get", "blocked_put.release", "blocked_put"]
OPERATIONS = ["put", "put_nowait", "put_many", "get", "get_nowait", "get_many", "qsize", "empty", "full",
              "info", "stats", "task_done", "join"]
LAST_OPERATIONS = ["open", "open.get_nowait", "open.info", "close", "detach", "open.destroy"]


def targets():
    """Every word the fuzzer writes: (where, field, offset in its structure, width, kind)."""
    out = [("header", *f) for f in HEADER_FIELDS]
    out += [(f"slot:{role}", *f) for role in SLOT_ROLES for f in SLOT_FIELDS]
    out += [(f"record:{role}", *f) for role in RECORD_ROLES for f in RECORD_FIELDS]
    return out


# Words a blocked caller's wake-up depends on: written while a get() or put() sleeps.
WAKE_FIELDS = ("capacity", "maxsize", "closed", "mutex.", "c.", "journal.active", "not_", "join_")


def combos():
    """(target, value kind, mode) triples: every word with every hostile value for it, written
    before the calls ("calls"), and the header's words a wake-up depends on written while a
    get() or put() is blocked ("blocked_get", "blocked_put")."""
    out = []
    for t in targets():
        for v in VALUE_KINDS + (PID_KINDS if t[4] == PID else []):
            out.append((t, v, "calls"))
            if t[0] == "header" and t[1].startswith(WAKE_FIELDS):
                out += [(t, v, "blocked_get"), (t, v, "blocked_put")]
    return out


