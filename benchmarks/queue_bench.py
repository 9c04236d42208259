"""SageQueue side by side with the queues people would use instead, in one run.

Run from the repo root, with the native module built:

    PYTHONPATH=. python benchmarks/queue_bench.py              # full run, a few minutes
    PYTHONPATH=. python benchmarks/queue_bench.py --quick      # under a minute
    PYTHONPATH=. python benchmarks/queue_bench.py --only small,latency \
        --competitors sage_queue,faster_fifo --repeat 5

Competitors (COMPETITORS): sage_queue, multiprocessing.Queue / SimpleQueue / Pipe,
faster-fifo (`pip install faster-fifo`, the `bench` extra) and queue.Queue between
threads. Scenarios (SCENARIOS): throughput of small dicts and 1 KiB / 64 KiB / 1 MiB
bytes with 1 producer and 1 consumer, small dicts with 4 producers and 4 consumers,
put_many/get_many batches of 64, and ping-pong latency.

Producers and consumers are separate processes (threads for queue.Queue). A cell is
timed from a start barrier to the arrival of the last item, and the items received
must equal the items sent. Each cell is sized by a short pilot run to take about a
second (0.4 s with --quick) and measured --repeat times; the best run counts.
queue.Queue hands over references (no pickle, no copy), so its byte-payload MB/s
shows what skipping the copy is worth, not a competing transport.

"sage speedup" is sage_queue's items/s over the competitor's (for latency, the
competitor's median round trip over sage_queue's): above 1 means sage_queue wins.
MB is 10**6 payload bytes. The machines are noisy: compare ratios, not absolute
figures from different runs. Results are written as JSON (--json). Targets are
printed, never asserted; the exit status is 1 only if a sage_queue cell failed
(an exception, lost items or a hang).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import multiprocessing
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from queue_roles import (  # the competitors, and the roles their workers play
    COMPETITORS,
    PAYLOAD_BYTES,
    SAGE,
    Competitor,
    MiB,
    consume,
    echo,
    ping,
    produce,
    run_role,
    run_role_in_process,
)

START_TIMEOUT_S = 60.0  # workers reach the start barrier (spawn imports take a while)
HANG_MARGIN_S = 30.0  # a run may take this much longer than expected before it is a hang
EXIT_GRACE_S = 5.0  # workers exit after reporting; past this they are killed
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "queue_bench.json"




@dataclasses.dataclass(frozen=True)
class Runtime:
    worker: Callable  # Process or Thread
    barrier: Callable
    results: Callable
    entry: Callable


THREADS = Runtime(threading.Thread, threading.Barrier, queue.Queue, run_role)


def process_runtime(ctx) -> Runtime:
    return Runtime(ctx.Process, ctx.Barrier, ctx.Queue, run_role_in_process)


# -- scenarios -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    payload: str
    pilot_items: int = 10_000  # the sizing run; every competitor must finish it quickly
    producers: int = 1
    consumers: int = 1
    batch: int = 0  # put_many/get_many of this many items; 0 = put/get
    per_item_reference: tuple[str, ...] = ()  # shown doing put/get when batch is set
    pingpong: bool = False
    capacity_bytes: int = 8 * MiB  # for sage_queue and faster-fifo alike

    def __post_init__(self):
        # Sentinels: each consumer stops at the first it sees, and batches rely on
        # the sentinel being the last item of its batch.
        if self.producers != self.consumers or (self.batch and self.producers != 1):
            raise ValueError(f"scenario {self.name}: unsupported producer/consumer shape")

    def applies_to(self, competitor: Competitor) -> bool:
        if self.producers > 1 and not competitor.mpmc:
            return False
        return (not self.batch or competitor.channel.batches
                or competitor.name in self.per_item_reference)

    def batch_for(self, competitor: Competitor) -> int:
        return self.batch if competitor.channel.batches else 0

    def label(self, competitor: Competitor) -> str:
        per_item = self.batch and not self.batch_for(competitor)
        return competitor.name + (" (per-item)" if per_item else "")

    def round_items(self, items: float, batch: int) -> int:
        step = self.producers * max(batch, 1)
        return max(10 * step, int(items) // step * step)

    def plan(self, channels, items, seconds, batch):
        """The workers of one run: (role, channels, args) each."""
        if self.pingpong:
            return [(ping, channels, (seconds,)), (echo, channels, ())]
        per_producer = items // self.producers
        return ([(produce, channels, (self.payload, per_producer, batch))] * self.producers
                + [(consume, channels, (batch,))] * self.consumers)

    def measure(self, reports) -> dict:
        """Figures of one run from its workers' reports; BenchError if they disagree."""
        by_role = {}
        for report in reports:
            by_role.setdefault(report["role"], []).append(report)
        if self.pingpong:
            (pinger,), (echoer,) = by_role["pinger"], by_role["echo"]
            if echoer["items"] != pinger["items"]:
                raise BenchError(f"echoed {echoer['items']} of {pinger['items']} pings")
            seconds = pinger["end"] - pinger["start"]
            return {"items": pinger["samples"], "seconds": seconds,
                    "items_per_s": pinger["items"] / seconds,
                    "latency_us": {"median": pinger["median_us"], "p99": pinger["p99_us"]}}
        sent = sum(r["items"] for r in by_role["producer"])
        received = sum(r["items"] for r in by_role["consumer"])
        if received != sent:
            raise BenchError(f"received {received} of {sent} items")
        seconds = (max(r["end"] for r in by_role["consumer"])
                   - min(r["start"] for r in reports))
        size = PAYLOAD_BYTES[self.payload]
        return {"items": sent, "seconds": seconds, "items_per_s": sent / seconds,
                "mb_per_s": None if size is None else sent * size / seconds / 1e6}


SCENARIOS = (
    Scenario("small", "small dict, 1 producer -> 1 consumer", "dict"),
    Scenario("1k", "1 KiB bytes, 1 producer -> 1 consumer", "1k"),
    Scenario("64k", "64 KiB bytes, 1 producer -> 1 consumer", "64k", pilot_items=1_000,
             capacity_bytes=16 * MiB),
    Scenario("1m", "1 MiB bytes, 1 producer -> 1 consumer", "1m", pilot_items=100,
             capacity_bytes=64 * MiB),
    Scenario("mpmc", "small dict, 4 producers -> 4 consumers", "dict", pilot_items=20_000,
             producers=4, consumers=4),
    Scenario("batch", "small dict, put_many/get_many batches of 64", "dict",
             pilot_items=64 * 200, batch=64, per_item_reference=("mp_queue",)),
    Scenario("latency", "ping-pong round trip, small dict", "dict", pingpong=True),
)


# -- running a cell ----------------------------------------------------------------

class BenchError(Exception):
    """A run that produced no valid figure: its message goes in the table cell."""


@dataclasses.dataclass
class Measurement:
    scenario: str
    competitor: str
    items: int = 0
    seconds: float = 0.0
    items_per_s: float = 0.0
    mb_per_s: float | None = None
    latency_us: dict | None = None
    error: str | None = None


def collect(results, count: int, budget_s: float) -> list[dict]:
    """Up to `count` reports within the budget; after an error, only a second more."""
    reports = []
    deadline = time.monotonic() + budget_s
    while len(reports) < count:
        try:
            reports.append(results.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            break
        if "error" in reports[-1]:
            deadline = min(deadline, time.monotonic() + 1.0)
    return reports


def stop(workers, grace_s: float) -> int:
    """Join every worker, killing processes that outlive the grace; how many were stuck."""
    stuck = 0
    deadline = time.monotonic() + grace_s
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            stuck += 1
            if hasattr(worker, "terminate"):  # a stuck thread cannot be killed: left as daemon
                worker.terminate()
                worker.join(1.0)
                if worker.is_alive():
                    worker.kill()
                    worker.join(1.0)
    return stuck


def first_error(reports) -> str | None:
    errors = [r["error"] for r in reports if "error" in r]
    # A worker that found the barrier broken is a bystander; name the one that broke it.
    return next((e for e in errors if "BrokenBarrierError" not in e), errors[0] if errors else None)


def run_once(scenario, competitor, runtime, ctx, items, seconds, expected_s) -> Measurement:
    result = Measurement(scenario.name, competitor.name)
    batch = scenario.batch_for(competitor)
    channels, workers = [], []
    try:
        channels = [competitor.channel(ctx, scenario.capacity_bytes)
                    for _ in range(2 if scenario.pingpong else 1)]
        plan = scenario.plan(channels, items, seconds, batch)
        barrier = runtime.barrier(len(plan) + 1)
        results = runtime.results()
        for role, endpoints, args in plan:
            worker = runtime.worker(target=runtime.entry, daemon=True,
                                    args=(role, barrier, results, endpoints, args))
            worker.start()
            workers.append(worker)
        budget_s = HANG_MARGIN_S + 5 * expected_s
        try:
            barrier.wait(START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            budget_s = 2.0  # a worker failed before the start: its report is on the way
        reports = collect(results, len(plan), budget_s)
        error = first_error(reports)
        if error:
            raise BenchError(error)
        if len(reports) < len(plan):
            raise BenchError(f"hang: {len(plan) - len(reports)} of {len(plan)} workers "
                             f"did not finish within {budget_s:.0f} s")
        for key, value in scenario.measure(reports).items():
            setattr(result, key, value)
    except Exception as exc:
        result.error = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
    finally:
        stuck = stop(workers, EXIT_GRACE_S if result.error is None else 1.0)
        for channel in channels:
            channel.destroy()
    if stuck and result.error is None:
        result.error = f"hang: {stuck} worker(s) did not exit after reporting"
    return result


def bench_cell(scenario, competitor, runtime, ctx, seconds, repeat) -> Measurement:
    """Best of `repeat` runs, each sized from the pilot (then the best run) to last `seconds`."""
    run = functools.partial(run_once, scenario, competitor, runtime, ctx)
    if scenario.pingpong:
        best = None
        for _ in range(repeat):
            result = run(0, seconds, seconds)
            if result.error:
                return result
            if best is None or result.latency_us["median"] < best.latency_us["median"]:
                best = result
        return best
    best = run(scenario.pilot_items, seconds, 0.0)  # pilots are sized to be quick for all
    if best.error:
        return best
    batch = scenario.batch_for(competitor)
    for attempt in range(repeat):
        rate = best.items_per_s
        items = scenario.round_items(rate * seconds, batch)
        result = run(items, seconds, items / rate)
        if result.error:
            return result
        if attempt == 0 or result.items_per_s > best.items_per_s:
            best = result  # the pilot never counts: it is short and cold
    return best


# -- reporting -----------------------------------------------------------------------

def speedups(scenario, cells: dict[str, Measurement]) -> dict[str, float]:
    """sage_queue's advantage over each competitor that produced a figure (>1: sage wins)."""
    sage = cells.get(SAGE)
    if sage is None or sage.error:
        return {}
    ratios = {}
    for name, cell in cells.items():
        if name == SAGE or cell is None or cell.error:
            continue
        if scenario.pingpong:
            ratios[name] = cell.latency_us["median"] / sage.latency_us["median"]
        else:
            ratios[name] = sage.items_per_s / cell.items_per_s
    return ratios


ROW = "  {:<28}{:>13}{:>11}{:>13}{:>11}{:>8}"


def print_header(scenario):
    print(f"\n== {scenario.title} ==")
    if scenario.pingpong:
        print(ROW.format("competitor", "median us", "p99 us", "sage speedup", "samples", "s"))
    else:
        print(ROW.format("competitor", "items/s", "MB/s", "sage speedup", "items", "s"))


def print_row(scenario, label, cell: Measurement | None, ratio: float | None):
    if cell is None:
        print(f"  {label:<28}{'n/a':>13}")
        return
    if cell.error:
        print(f"  {label:<28}ERROR: {cell.error.splitlines()[0][:120]}")
        return
    speedup = "-" if ratio is None else f"{ratio:.2f}x"
    if scenario.pingpong:
        first, second = f"{cell.latency_us['median']:.1f}", f"{cell.latency_us['p99']:.1f}"
    else:
        first = f"{cell.items_per_s:,.0f}"
        second = "-" if cell.mb_per_s is None else f"{cell.mb_per_s:,.0f}"
    print(ROW.format(label, first, second, speedup, f"{cell.items:,}", f"{cell.seconds:.2f}"))


@dataclasses.dataclass(frozen=True)
class Target:
    text: str
    scenario: str
    versus: str | None  # the competitor whose speedup is judged; None: sage_queue's own figure
    minimum: float | None = None
    maximum: float | None = None

    def judge(self, cells, ratios) -> tuple[str, str]:
        """(measured figure, verdict)."""
        if self.versus:
            value = ratios.get(self.scenario, {}).get(self.versus)
            shown = None if value is None else f"{value:.2f}x"
        else:
            sage = cells.get(self.scenario, {}).get(SAGE)
            value = None
            if sage is not None and not sage.error:
                value = sage.latency_us["median"] if sage.latency_us else sage.items_per_s
            shown = None if value is None else (
                f"{value:.1f} us" if sage.latency_us else f"{value:,.0f} items/s")
        if value is None:
            return "-", "not measured"
        met = ((self.minimum is None or value >= self.minimum)
               and (self.maximum is None or value <= self.maximum))
        return shown, "met" if met else "NOT MET"


TARGETS = (
    Target("small dict 1P/1C >= 5x multiprocessing.Queue", "small", "mp_queue", minimum=5),
    Target("small dict 1P/1C >= 5x faster-fifo", "small", "faster_fifo", minimum=5),
    Target("put_many/get_many batches of 64 >= 1,000,000 items/s", "batch", None,
           minimum=1_000_000),
    Target("64 KiB >= 2x faster-fifo MB/s", "64k", "faster_fifo", minimum=2),
    Target("1 MiB >= 1.5x faster-fifo MB/s", "1m", "faster_fifo", minimum=1.5),
    Target("4P/4C small dicts >= 2x faster-fifo", "mpmc", "faster_fifo", minimum=2),
    Target("ping-pong small dict median <= 10 us", "latency", None, maximum=10),
)


def pick(kind: str, registry, spec: str | None) -> list:
    """The registry entries named in a comma list (all when None), in registry order."""
    if spec is None:
        return list(registry)
    names = {n.strip() for n in spec.split(",") if n.strip()}
    unknown = names - {entry.name for entry in registry}
    if unknown:
        valid = ", ".join(entry.name for entry in registry)
        raise SystemExit(f"unknown {kind} {', '.join(sorted(unknown))}; valid: {valid}")
    return [entry for entry in registry if entry.name in names]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short cells and one run each (under a minute)")
    parser.add_argument("--only", metavar="SCENARIO[,SCENARIO]",
                        help="scenarios: " + ", ".join(s.name for s in SCENARIOS))
    parser.add_argument("--competitors", metavar="NAME[,NAME]",
                        help="competitors: " + ", ".join(c.name for c in COMPETITORS))
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help="where to write the results (default: %(default)s)")
    parser.add_argument("--repeat", type=int, metavar="N",
                        help="runs per cell, the best counts (default 1 with --quick, else 3)")
    parser.add_argument("--start-method", choices=multiprocessing.get_all_start_methods(),
                        default="fork" if "fork" in multiprocessing.get_all_start_methods()
                        else None, help="multiprocessing start method (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    scenarios = pick("scenario", SCENARIOS, args.only)
    competitors = pick("competitor", COMPETITORS, args.competitors)
    seconds = 0.4 if args.quick else 1.0
    ctx = multiprocessing.get_context(args.start_method)
    processes = process_runtime(ctx)
    machine = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
               "platform": platform.platform(), "start_method": ctx.get_start_method()}
    print(f"queue_bench: {machine['cpu_count']} cpus, Python {machine['python']}, "
          f"{machine['platform']}, {machine['start_method']}; ~{seconds:g} s per run, "
          f"best of {args.repeat}")

    began = time.monotonic()
    cells: dict[str, dict[str, Measurement | None]] = {}
    ratios: dict[str, dict[str, float]] = {}
    for scenario in scenarios:
        print_header(scenario)
        row = cells[scenario.name] = {}
        for competitor in competitors:
            label = scenario.label(competitor)
            if not scenario.applies_to(competitor):
                row[competitor.name] = None
                print_row(scenario, label, None, None)
                continue
            runtime = THREADS if competitor.threads else processes
            cell = bench_cell(scenario, competitor, runtime, ctx, seconds, args.repeat)
            row[competitor.name] = cell
            ratio = 1.0 if competitor.name == SAGE else speedups(
                scenario, {SAGE: row.get(SAGE), competitor.name: cell}).get(competitor.name)
            print_row(scenario, label, cell, ratio)
            sys.stdout.flush()
        ratios[scenario.name] = speedups(scenario, row)

    print("\n== targets (informational) ==")
    verdicts = []
    for target in TARGETS:
        shown, verdict = target.judge(cells, ratios)
        verdicts.append({"target": target.text, "measured": shown, "verdict": verdict})
        print(f"  {target.text:<56}{shown:>20}  {verdict}")

    measured = [c for row in cells.values() for c in row.values() if c is not None]
    failures = [c for c in measured if c.error]
    for cell in failures:
        print(f"\nERROR in {cell.scenario} / {cell.competitor}:\n  {cell.error}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "machine": machine,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {"quick": args.quick, "repeat": args.repeat, "seconds_per_run": seconds},
        "results": [dataclasses.asdict(c) for c in measured],
        "ratios": ratios,
        "ratio_meaning": "sage_queue items/s over the competitor's; for latency, the "
                         "competitor's median over sage_queue's (>1: sage_queue is faster)",
        "targets": verdicts,
    }, indent=2) + "\n")
    print(f"\n{len(measured)} cells in {time.monotonic() - began:.0f} s; results in {args.json}")

    sage_failures = [c for c in failures if c.competitor == SAGE]
    if sage_failures:
        print(f"sage_queue FAILED in: {', '.join(c.scenario for c in sage_failures)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
