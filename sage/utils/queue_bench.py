"""`sage bench`: each backend beside the queue a user would pick for the same placement.

    processes on one machine   sage_queue    vs multiprocessing.Queue
    threads of one process     python_queue  vs queue.Queue
    Ray tasks                  ray_queue     vs ray.util.queue.Queue

One producer (a spawned process, a thread or a Ray task, as the placement says) and one
consumer (this process) move small dicts, one per call, and in batches two ways: with
put_many/get_many (ours only) and as one list per put (every queue can; what users of
the alternatives do). Each of ours is compared with the alternative moving the same
batch size, a list per put for batches. Ratios are measured in one run: the machines are
noisy, absolute figures drift.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import queue as stdlib_queue
import threading
import time
from collections.abc import Callable

from .errors import BackendUnavailableError
from .install_hint import plot_hint
from .queue_adapter import create_queue, get_queue_backends

__all__ = ["PLACEMENTS", "bench", "format_bench", "plot_bench", "require_matplotlib"]

SMALL_ITEM = {"id": 0, "ts": 1.5, "tag": "abc", "vals": [1, 2, 3]}
WAIT_SECONDS = 120  # a consumer that hears nothing this long reports the run as failed


ITEM, MANY, LIST = "per item", "put_many", "list"  # how a run moves its items


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str
    make: Callable  #: () -> a fresh queue
    batches: bool  #: has put_many/get_many
    dispose: Callable  #: (queue) -> None


@dataclasses.dataclass(frozen=True)
class Placement:
    name: str
    backend: str  #: ours
    where: str  #: where the producer runs
    ours: Contender
    alternative: Contender


def _ours(backend: str) -> Contender:
    # Explicit sizes and timeouts: the bench measures the backend, not this machine's settings.
    return Contender(backend, lambda: create_queue(backend, maxsize=0, put_timeout=None,
                                                   get_timeout=None),
                     True, lambda q: getattr(q, "destroy", q.close)())


def _mp_queue() -> Contender:
    def dispose(q):
        q.close()
        q.join_thread()

    return Contender("multiprocessing.Queue", lambda: mp.get_context("spawn").Queue(), False, dispose)


def _ray_util_queue() -> Contender:
    def make():
        from ray.util.queue import Queue

        return Queue()

    return Contender("ray.util.queue.Queue", make, False, lambda q: q.shutdown())


PLACEMENTS = {
    "processes": Placement("processes", "sage_queue", "a spawned process", _ours("sage_queue"),
                           _mp_queue()),
    "threads": Placement("threads", "python_queue", "a thread", _ours("python_queue"),
                         Contender("queue.Queue", stdlib_queue.Queue, False, lambda q: None)),
    "ray": Placement("ray", "ray_queue", "a Ray task", _ours("ray_queue"), _ray_util_queue()),
}


def _produce(q, count: int, batch: int, how: str) -> None:
    if how == ITEM:
        for _ in range(count):
            q.put(SMALL_ITEM)
    elif how == MANY:
        chunk = [SMALL_ITEM] * batch
        for _ in range(count // batch):
            q.put_many(chunk)
    else:
        for _ in range(count // batch):
            q.put([SMALL_ITEM] * batch)
    q.put(None)  # the end


def _consume(q, batch: int, how: str) -> tuple[int, int, float]:
    """(items received, items in the first get, when the first get returned): the clock
    starts there, so starting the producer (a process spawn, a Ray task) is not timed."""
    received, first, first_at = 0, None, 0.0
    while True:
        if how == ITEM:
            items = [q.get(timeout=WAIT_SECONDS)]
        elif how == MANY:
            items = q.get_many(batch, timeout=WAIT_SECONDS)
        else:
            got = q.get(timeout=WAIT_SECONDS)
            items = got if isinstance(got, list) else [got]
        if first is None:
            first, first_at = len(items), time.perf_counter()
        for item in items:
            if item is None:
                return received, first, first_at
            received += 1


def _start_producer(placement: str, q, count: int, batch: int, how: str) -> Callable:
    """Start the producer where the placement puts it; returns a join() callable."""
    args = (q, count, batch, how)
    if placement == "processes":
        proc = mp.get_context("spawn").Process(target=_produce, args=args)
        proc.start()
        return lambda: proc.join(WAIT_SECONDS)
    if placement == "ray":
        import ray

        ref = ray.remote(_produce).remote(*args)
        return lambda: ray.get(ref, timeout=WAIT_SECONDS)
    thread = threading.Thread(target=_produce, args=args, daemon=True)
    thread.start()
    return lambda: thread.join(WAIT_SECONDS)


def _run(placement: Placement, contender: Contender, count: int, batch: int, how: str) -> dict:
    row = dict(placement=placement.name, queue=contender.name, ours=contender is placement.ours,
               batch=batch, how=how, items=count)
    try:
        q = contender.make()
    except (BackendUnavailableError, ImportError, OSError) as exc:
        return dict(row, error=str(exc))
    try:
        join = _start_producer(placement.name, q, count, batch, how)
        received, first, first_at = _consume(q, batch, how)
        seconds = time.perf_counter() - first_at
        join()
    except (stdlib_queue.Empty, OSError, RuntimeError) as exc:
        return dict(row, error=f"{type(exc).__name__}: {exc}")
    finally:
        contender.dispose(q)
    if received != count:
        return dict(row, error=f"received {received} of {count} items")
    timed = count - first  # the items after the first get
    if timed <= 0 or seconds <= 0:
        return dict(row, error=f"too few items to time: raise --items above {count}")
    return dict(row, seconds=round(seconds, 4), items_per_s=round(timed / seconds))


def available_placements() -> list[str]:
    backends = get_queue_backends()
    return [name for name, p in PLACEMENTS.items() if backends[p.backend]["available"]]


def bench(placements=None, count: int = 100_000, ray_count: int = 2_000,
          batches=(1, 64)) -> list[dict]:
    """Items/s of each placement's backend and its alternative, per batch size (and, for
    batches, per way of moving them). A row of ours carries ``ratio`` and ``versus``: its
    items/s over the alternative's with the same batch size in the same run."""
    backends = get_queue_backends()
    chosen = list(placements or available_placements())
    for name in chosen:
        backend = PLACEMENTS[name].backend
        if not backends[backend]["available"]:
            raise BackendUnavailableError(
                f"queue backend {backend!r} is not installed: {backends[backend]['install_hint']}")
    started_ray = False
    if "ray" in chosen:
        import ray

        from .ray_queue import ensure_ray

        started_ray = not ray.is_initialized()
        ensure_ray()
    results = []
    try:
        for name in chosen:
            placement = PLACEMENTS[name]
            for batch in batches:
                # one Ray call per item costs ~1 ms: fewer items keep the run short
                n = ray_count if name == "ray" and batch == 1 else count
                n -= n % batch
                ways = (ITEM,) if batch == 1 else (MANY, LIST)
                rows = [_run(placement, placement.ours, n, batch, how) for how in ways]
                other = _run(placement, placement.alternative, n, batch, ways[-1])
                for ours in rows:
                    if "items_per_s" in ours and "items_per_s" in other:
                        ours["ratio"] = round(ours["items_per_s"] / other["items_per_s"], 2)
                        ours["versus"] = other["queue"] + (" (a list per put)" if batch > 1 else "")
                results += [*rows, other]
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return results


def format_bench(results: list[dict]) -> str:
    header = ("placement", "queue", "batch", "how", "items", "items/s", "vs the alternative")
    rows = [header]
    for r in results:
        if "error" in r:
            rows.append((r["placement"], r["queue"], str(r["batch"]), r["how"], f"{r['items']:,}",
                         "FAILED", r["error"]))
            continue
        ratio = f"{r['ratio']:.2f}x {r['versus']}" if "ratio" in r else ""
        rows.append((r["placement"], r["queue"], str(r["batch"]), r["how"], f"{r['items']:,}",
                     f"{r['items_per_s']:,}", ratio))
    widths = [max(len(row[c]) for row in rows) for c in range(len(header) - 1)]
    right = {2, 4, 5}
    lines = ["  ".join([cell.rjust(w) if c in right else cell.ljust(w)
                        for c, (cell, w) in enumerate(zip(row, widths, strict=False))] + [row[-1]]).rstrip()
             for row in rows]
    lines.append("(1 producer, 1 consumer, small dicts; the producer in a spawned process, a "
                 "thread or a Ray task as the placement says; a batch moves with put_many/get_many "
                 "or as one list per put; ours against the alternative's run of the same batch "
                 "size)")
    return "\n".join(lines)


def require_matplotlib():
    """matplotlib, or an ImportError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(f"`sage bench --plot` draws with matplotlib, which is not installed: "
                          f"{plot_hint()}") from None
    return matplotlib


def plot_bench(results: list[dict], path: str) -> None:
    """A bar chart: one panel per placement, ours beside the alternative for each batch size,
    items/s on a log scale (Ray's figures are a thousand times smaller than shared memory's)."""
    matplotlib = require_matplotlib()
    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    placements = list(dict.fromkeys(r["placement"] for r in results))
    fig, axes = plt.subplots(1, len(placements), figsize=(4.5 * len(placements), 4.2), squeeze=False)
    for ax, name in zip(axes[0], placements, strict=True):
        rows = [r for r in results if r["placement"] == name]
        groups = list(dict.fromkeys((r["batch"], r["how"]) for r in rows))
        for offset, ours in ((-0.2, True), (0.2, False)):
            picked = [(i, r) for i, g in enumerate(groups) for r in rows
                      if (r["batch"], r["how"]) == g and r["ours"] is ours]
            if not picked:
                continue
            values = [r.get("items_per_s", 0) for _, r in picked]
            bars = ax.bar([i + offset for i, _ in picked], values, 0.4, label=picked[0][1]["queue"],
                          color="tab:blue" if ours else "tab:gray")
            ax.bar_label(bars, labels=[f"{v:,.0f}" if v else "failed" for v in values],
                         fontsize=7, rotation=90, padding=2)
        ax.set_xticks(range(len(groups)), [f"batch {b}\n{how}" for b, how in groups], fontsize=8)
        ax.set_yscale("log")
        top = max((r.get("items_per_s", 0) for r in rows), default=0)
        if top:
            ax.set_ylim(top=top * 30)  # room for the labels above the bars
        ax.set_title(f"{name}: producer in {PLACEMENTS[name].where}", fontsize=9)
        ax.set_ylabel("items/s (log)")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("sage bench: each backend beside the usual alternative (1 producer, 1 consumer)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
