"""RayQueue (ray_queue backend) side by side with ray.util.queue, in one run.

Run from the repo root (Ray 2.60 installed; Ray stays on 127.0.0.1):

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 PYTHONPATH=. python benchmarks/ray_queue_bench.py
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 PYTHONPATH=. python benchmarks/ray_queue_bench.py --quick
    ... benchmarks/ray_queue_bench.py --json /tmp/ray_queue_bench.json --repeat 5

One local Ray is started, then six modes run in the same session: ray.util.queue
per-item put/get (the baseline), ray.util.queue put_nowait_batch/get_nowait_batch
in batches of 64 and 1024, RayQueue per-item put/get, and RayQueue
put_many/get_many in batches of 64 and 1024 (blocking get_many with a timeout).
The producer is a Ray task that receives the queue handle; the consumer is the
driver. Items are small dicts ({"id": i, "ts": 1.5, "tag": "abc", "vals": [1, 2, 3]}).

A run is timed from the producer's first put to the driver's receipt of the last
item (one machine, so both read the same clock); building the items and starting
the task are outside it. Each mode is sized by a short pilot run to take about
--seconds (0.5 s with --quick, else 2 s); the runs go round-robin over the modes
--repeat times (1 with --quick, else 3) and the best run counts. Every run checks
that each item arrived exactly once and in order, and that the queue is empty
after; any failure makes the exit status 1.

"vs baseline" is the mode's items/s over ray.util.queue per-item put/get. The
machines are noisy: compare ratios from one run, not absolute figures across
runs. The target (batched RayQueue >= 20x the baseline) is printed, never
asserted. Results go to JSON (--json, default benchmarks/results/ray_queue_bench.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import queue
import sys
import time
import uuid
from pathlib import Path

# Ray binds the machine's network address unless told otherwise:
# this has to be in the environment before ray is imported.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
import ray.util.queue  # noqa: E402

from sage.utils.queue_adapter import create_queue  # noqa: E402
from sage.utils.ray_queue import ensure_ray  # noqa: E402

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "ray_queue_bench.json"
CALL_TIMEOUT_S = 30.0  # a blocking get (or a polling consumer) waiting this long is a hang
POLL_SLEEP_S = 0.0005  # ray.util.queue batch consumer: pause after an empty poll
PILOT_S = 0.15  # rough length of the sizing run
MIN_PER_ITEM = 300  # per-item runs are slow (~300 items/s); fewer items would be noise
MAX_ITEMS = 2_000_000
TARGET_RATIO = 20.0
TARGET_MODE = "rayqueue_batch_1024"
BASELINE_MODE = "ray_util_put_get"


def payload(i: int) -> dict:
    return {"id": i, "ts": 1.5, "tag": "abc", "vals": [1, 2, 3]}


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    label: str
    backend: str  # "ray_util" or "ray_queue"
    batch: int  # 1 = per-item put/get
    polls: bool = False  # the consumer cannot block and has to poll


MODES = [
    Mode("ray_util_put_get", "ray.util.queue put/get", "ray_util", 1),
    Mode("ray_util_batch_64", "ray.util.queue nowait_batch 64 *", "ray_util", 64, polls=True),
    Mode("ray_util_batch_1024", "ray.util.queue nowait_batch 1024 *", "ray_util", 1024, polls=True),
    Mode("rayqueue_put_get", "RayQueue put/get", "ray_queue", 1),
    Mode("rayqueue_batch_64", "RayQueue put_many/get_many 64", "ray_queue", 64),
    Mode("rayqueue_batch_1024", "RayQueue put_many/get_many 1024", "ray_queue", 1024),
]


# -- producer (a Ray task) -------------------------------------------------------

@ray.remote
def produce(q, items: int, batch: int) -> float:
    """Put payload(0..items-1) in order; return the wall-clock time of the first put."""
    data = [payload(i) for i in range(items)]  # built before the clock starts
    started = time.time()
    if batch == 1:
        for item in data:
            q.put(item, timeout=CALL_TIMEOUT_S)
    elif isinstance(q, ray.util.queue.Queue):
        for start in range(0, items, batch):
            q.put_nowait_batch(data[start:start + batch])
    else:
        for start in range(0, items, batch):
            q.put_many(data[start:start + batch], timeout=CALL_TIMEOUT_S)
    return started


# -- consumers (the driver) ------------------------------------------------------

def consume_one_by_one(q, items: int, got: list) -> int:
    for _ in range(items):
        got.append(q.get(timeout=CALL_TIMEOUT_S))  # queue.Empty on a hang
    return 0


def consume_get_many(q, items: int, batch: int, got: list) -> int:
    while len(got) < items:
        got.extend(q.get_many(batch, timeout=CALL_TIMEOUT_S))
    return 0


def consume_polling(q, items: int, batch: int, got: list) -> int:
    """ray.util.queue's batch get cannot block: poll, as a consumer would have to."""
    empty_polls = 0
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while len(got) < items:
        want = min(batch, items - len(got))
        try:
            # raises Empty unless all `want` are there, so fall back to what qsize says
            got.extend(q.get_nowait_batch(want))
        except queue.Empty:
            ready = min(q.qsize(), want)
            if ready:
                got.extend(q.get_nowait_batch(ready))
            else:
                empty_polls += 1
                if time.monotonic() > deadline:
                    raise queue.Empty(f"nothing arrived for {CALL_TIMEOUT_S:g} s") from None
                time.sleep(POLL_SLEEP_S)
                continue
        deadline = time.monotonic() + CALL_TIMEOUT_S
    return empty_polls


# -- one run ---------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    items: int
    seconds: float  # producer's first put -> last item received
    wall_seconds: float  # task launch -> last item received
    empty_polls: int

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds


class BenchError(RuntimeError):
    """A run delivered the wrong items, hung or raised."""


def check_delivery(got: list, items: int, leftover: int) -> None:
    if len(got) != items:
        raise BenchError(f"received {len(got)} items, expected {items}")
    for i, item in enumerate(got):
        if item != payload(i):
            ids = [x.get("id") if isinstance(x, dict) else x for x in got[max(0, i - 2):i + 3]]
            raise BenchError(f"item {i} is wrong (ids around it: {ids}): "
                             "lost, duplicated or reordered")
    if leftover:
        raise BenchError(f"{leftover} items left in the queue after all {items} were received")


def run_once(mode: Mode, q, items: int) -> Run:
    got: list = []
    launched = time.time()
    producer = produce.remote(q, items, mode.batch)
    try:
        if mode.batch == 1:
            polls = consume_one_by_one(q, items, got)
        elif mode.polls:
            polls = consume_polling(q, items, mode.batch, got)
        else:
            polls = consume_get_many(q, items, mode.batch, got)
    except queue.Empty as exc:
        raise BenchError(f"hang: no item for {CALL_TIMEOUT_S:g} s after {len(got)} of {items} "
                         f"({exc or 'queue.Empty'})") from None
    finished = time.time()
    started = ray.get(producer, timeout=CALL_TIMEOUT_S)
    check_delivery(got, items, q.qsize())
    # the producer's clock and ours are the same machine's; fall back if that ever lies
    seconds = finished - started if finished > started else finished - launched
    return Run(items, seconds, finished - launched, polls)


def size_mode(mode: Mode, q, seconds: float) -> int:
    """Items for a run of about `seconds`, from a short pilot run (also checked)."""
    pilot_items = 40 if mode.batch == 1 else 8 * mode.batch
    least = MIN_PER_ITEM if mode.batch == 1 else pilot_items

    def whole_batches(items: float) -> int:
        return max(least, min(MAX_ITEMS, -(-int(items) // mode.batch) * mode.batch))

    items = pilot_items
    for _ in range(4):  # a pilot shorter than PILOT_S is mostly start-up noise: grow it
        pilot = run_once(mode, q, items)
        if pilot.seconds >= PILOT_S:
            break
        items = whole_batches(max(2 * items, 1.2 * PILOT_S * pilot.items_per_s))
    return whole_batches(pilot.items_per_s * seconds)


# -- queues ----------------------------------------------------------------------

class Queues:
    """One queue per backend, reused by every run (each run leaves it empty)."""

    def __init__(self):
        self._queues: dict = {}

    def get(self, backend: str):
        if backend not in self._queues:
            if backend == "ray_util":
                q = ray.util.queue.Queue()
            else:
                q = create_queue("ray_queue", name=f"ray-queue-bench-{uuid.uuid4().hex[:8]}",
                                 maxsize=0)
            q.qsize()  # the actor is up before any clock starts
            self._queues[backend] = q
        return self._queues[backend]

    def discard(self, backend: str) -> None:
        """Drop a queue a failed run may have left items in."""
        q = self._queues.pop(backend, None)
        if q is not None:
            self._close(q)

    def close(self) -> None:
        for backend in list(self._queues):
            self.discard(backend)

    @staticmethod
    def _close(q) -> None:
        try:
            if isinstance(q, ray.util.queue.Queue):
                q.shutdown(force=True)
            else:
                q.destroy()
        except Exception as exc:  # closing is best effort; the run's result stands
            print(f"  (could not close {q!r}: {exc})")


# -- report ----------------------------------------------------------------------

def best(runs: list[Run]) -> Run | None:
    return max(runs, key=lambda r: r.items_per_s) if runs else None


def print_table(results: dict, ratios: dict) -> None:
    print(f"\n{'mode':<36}{'items':>10}{'seconds':>10}{'items/s':>12}{'vs baseline':>13}")
    print("-" * 81)
    for mode in MODES:
        cell = results[mode.name]
        if cell["error"] or cell["best"] is None:
            print(f"{mode.label:<36}{'FAILED':>10}")
            continue
        run = cell["best"]
        print(f"{mode.label:<36}{run.items:>10,}{run.seconds:>10.3f}{run.items_per_s:>12,.0f}"
              f"{ratios[mode.name]:>12.1f}x")
    print("* ray.util.queue's batch calls cannot block: its consumer polls (get_nowait_batch,"
          f"\n  then qsize, then sleeps {POLL_SLEEP_S * 1e3:g} ms when empty). "
          "RayQueue's get_many blocks with a timeout.")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs, one each (under ~40 s with Ray's start)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help="where to write the results (default: %(default)s)")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="runs per mode, the best counts (default 1 with --quick, else 3)")
    parser.add_argument("--seconds", type=float, metavar="S",
                        help="length of one run (default 0.5 with --quick, else 2)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.seconds is None:
        args.seconds = 0.5 if args.quick else 2.0
    if args.repeat < 1 or args.seconds <= 0:
        parser.error("--repeat must be >= 1 and --seconds > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    ensure_ray()  # local Ray on 127.0.0.1, no dashboard
    ray_start_s = time.monotonic() - began
    machine = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform(), "ray": ray.__version__,
               "ray_node_ip": ray.util.get_node_ip_address(),
               "ray_cpus": ray.cluster_resources().get("CPU")}
    print(f"ray_queue_bench: {machine['cpu_count']} cpus, Python {machine['python']}, "
          f"Ray {machine['ray']} on {machine['ray_node_ip']} (started in {ray_start_s:.1f} s); "
          f"~{args.seconds:g} s per run, best of {args.repeat}")
    ray.get(produce.remote([], 0, 1))  # a warm worker, so no run pays for starting one

    queues = Queues()
    results = {m.name: {"mode": m, "items": None, "runs": [], "error": None, "best": None}
               for m in MODES}
    try:
        for mode in MODES:  # size every mode first, then measure them round-robin
            cell = results[mode.name]
            try:
                cell["items"] = size_mode(mode, queues.get(mode.backend), args.seconds)
            except (BenchError, ray.exceptions.RayError) as exc:
                cell["error"] = f"pilot: {exc}"
                queues.discard(mode.backend)
        for round_ in range(args.repeat):
            # interleaved, so a slow spell on the machine hits every mode alike
            for mode in MODES:
                cell = results[mode.name]
                if cell["error"]:
                    continue
                try:
                    cell["runs"].append(run_once(mode, queues.get(mode.backend), cell["items"]))
                except (BenchError, ray.exceptions.RayError) as exc:
                    cell["error"] = f"run {round_ + 1}: {exc}"
                    queues.discard(mode.backend)
                print(f"  round {round_ + 1}: {mode.label:<36}"
                      + (f"{cell['runs'][-1].items_per_s:>12,.0f} items/s" if not cell["error"]
                         else "FAILED"))
                sys.stdout.flush()
    finally:
        queues.close()

    for cell in results.values():
        cell["best"] = best(cell["runs"])
    base = results[BASELINE_MODE]["best"]
    ratios = {name: (cell["best"].items_per_s / base.items_per_s
                     if base and cell["best"] and not cell["error"] else None)
              for name, cell in results.items()}
    print_table(results, ratios)

    target = ratios.get(TARGET_MODE)
    measured = f"{target:.1f}x" if target is not None else "n/a"
    verdict = "met" if target is not None and target >= TARGET_RATIO else "not met"
    target_text = (f"RayQueue batched (1024) vs ray.util.queue per-item: {measured} "
                   f"(target >= {TARGET_RATIO:g}x): {verdict}")
    print(f"\n{target_text}")

    failures = {name: cell["error"] for name, cell in results.items() if cell["error"]}
    for name, error in failures.items():
        print(f"ERROR in {name}: {error}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": machine,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"quick": args.quick, "repeat": args.repeat, "seconds_per_run": args.seconds,
                     "call_timeout_s": CALL_TIMEOUT_S, "poll_sleep_s": POLL_SLEEP_S,
                     "ray_start_s": round(ray_start_s, 2),
                     "payload": payload(0)},
        "results": [{
            "mode": cell["mode"].name, "label": cell["mode"].label.rstrip(" *"),
            "backend": cell["mode"].backend, "batch": cell["mode"].batch,
            "consumer_polls": cell["mode"].polls, "items": cell["items"],
            "seconds": cell["best"].seconds if cell["best"] else None,
            "items_per_s": cell["best"].items_per_s if cell["best"] else None,
            "runs": [dict(dataclasses.asdict(r), items_per_s=r.items_per_s) for r in cell["runs"]],
            "error": cell["error"],
        } for cell in results.values()],
        "ratios": ratios,
        "ratio_meaning": "the mode's items/s over ray.util.queue per-item put/get (best runs)",
        "target": {"text": target_text, "mode": TARGET_MODE, "baseline": BASELINE_MODE,
                   "required": TARGET_RATIO, "measured": target, "verdict": verdict},
    }, indent=2) + "\n")

    ray.shutdown()
    print(f"\n{len(MODES)} modes in {time.monotonic() - began:.0f} s; results in {args.json}")
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
