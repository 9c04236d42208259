"""The crash harness's verdict (harness.py): the kills and the figures of a run, and the
accounting of every item put against what the consumers recorded.

Records are claimed in ring order and each producer's records are in seq order, so the
items a consumer killed while taking can have lost are, per producer, above the highest
seq any consumer had recorded before its get and at most the last seq in flight when it
died, and no more of them than it asked for. Every item whose put returned and that was
never delivered must fit one such kill; anything else is an unattributed loss.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from typing import TYPE_CHECKING

from crash_workers import PHASES

if TYPE_CHECKING:
    from harness import Config

__all__ = ["Kill", "Result", "analyse"]


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


def analyse(cfg, sh, seed, name, elapsed, kills, stats, join_returned, join_seconds, violations) -> Result:
    """The Result of a run from what its workers published (a crash_workers.Shared) and its kills;
    adds what it finds wrong to ``violations``."""
    P, N = cfg.producers, cfg.max_seq
    size = P * N
    arrays = [bytes(a) for a in sh.tally.counts]
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
    done = [sh.progress.returned(p) for p in range(P)]
    hi = [sh.progress.handed(p) for p in range(P)]
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
    garbled = sum(sh.tally.garbled)
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


