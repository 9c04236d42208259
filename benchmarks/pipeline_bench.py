"""The runtime's pipelines side by side with the same pipelines written by hand, in one run.

Run from the repo root, with the native module built (Bytewax optional: `pip install bytewax`):

    PYTHONPATH=. python benchmarks/pipeline_bench.py            # a few minutes
    PYTHONPATH=. python benchmarks/pipeline_bench.py --quick    # under a minute

(a) source -> map -> sink of small dicts: the runtime in process and thread mode (chained, as
    it runs by default: one task; and unchained: three tasks over queues); the same three
    processes by hand on multiprocessing.Queue (per item, batches of 64) and on SageQueue
    (per item; put_many/get_many of 64: the ceiling for three tasks on this queue); Bytewax
    with one worker and with two processes.
(b) the same with a CPU-heavy map (about 20 us per item) at parallelism 2.
(c) word count with keyby (lines -> tokenize x2 -> keyby x2 -> count x2 -> sink).
(d) source-to-sink latency at 1,000 items/s: p50 and p99.
(ray) the (a) pipeline on RemoteEnvironment, on one node and across two (a loopback cluster of
    two Ray nodes started here), against the same three stages as plain Ray actors calling
    the next one per item and per batch of 64 (`--only ray` runs this alone).

In (a) and (b) every cell's rate is its steady state, from two runs of different sizes:
(n - n/5) / (t_n - t_n/5), which takes start-up out (Bytewax runs as a subprocess; the
hand-written pipelines and the runtime fork their processes). (c) times the runtime from
job start to the last item at the sink. Each cell runs --repeat times and the best
counts. The machines are noisy: compare the ratios printed
here, measured in one run, not absolute figures from different runs; (a) runs every cell
once per round and gives the median of the rounds' ratios. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

# The Ray section's cluster stays on 127.0.0.1 (read when Ray is imported, so set first)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from sage.core.api import LocalEnvironment  # noqa: E402
from sage.core.function import BatchFunction, MapFunction, SinkFunction  # noqa: E402
from sage.utils import create_queue  # noqa: E402

FORK = multiprocessing.get_context("fork")
POOL = [{"id": i, "value": i * 0.5, "name": f"item-{i}"} for i in range(1024)]


class PoolSource(BatchFunction):
    """n small dicts, cycled from a pool (the source builds none per item)."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.left = n

    def execute(self):
        if self.left == 0:
            return None
        self.left -= 1
        return POOL[self.left & 1023]


def _spin(rounds: int) -> int:
    x = 0
    for i in range(rounds):
        x += i
    return x


def burn_calibrated(target_us: float = 20.0):
    """A map that burns about target_us of CPU per item (its loop count is measured here)."""
    rounds = 1000
    for _ in range(3):  # measure, rescale, measure again
        started = time.perf_counter()
        for _ in range(200):
            _spin(rounds)
        per_call_us = (time.perf_counter() - started) / 200 * 1e6
        rounds = max(1, int(rounds * target_us / per_call_us))

    def heavy(d, rounds=rounds):
        _spin(rounds)
        return d
    heavy.rounds = rounds
    return heavy


def best(repeat: int, run) -> float:
    return max(run() for _ in range(repeat))


# -- the runtime ------------------------------------------------------------------------------

def steady_rate(seconds, n: int) -> float:
    """Items/s past start-up: two runs, n and n/5 items, and the difference of their times."""
    small = n // 5
    whole = seconds(n)
    spent = whole - seconds(small)
    if spent < 0.2 * whole:  # noise swamped the difference: count start-up in, say so
        print("    (two-size difference unusable for one cell; its rate includes start-up)")
        return n / whole
    return (n - small) / spent


def runtime_seconds(mode: str, n: int, parallelism: int = 1, heavy=None, chaining=True) -> float:
    env = LocalEnvironment("bench", mode=mode, config={"chaining": chaining})
    fn = heavy or (lambda d: d)
    env.from_batch(PoolSource, n).map(fn, parallelism=parallelism).sink(lambda d: None)
    return env.submit(autostop=True).wall_time


class CountWords(MapFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counts = collections.Counter()

    def execute(self, word):
        self.counts[word] += 1

    def finish(self):
        return list(self.counts.items())


def wordcount_rate(mode: str, lines: int) -> float:
    from sage.runtime.demo import corpus_line

    env = LocalEnvironment("bench-wc", mode=mode)
    (env.from_collection([corpus_line(i) for i in range(lines)])
        .flatmap(str.split, parallelism=2).keyby(lambda w: w, parallelism=2)
        .map(CountWords, parallelism=2, name="count").sink(lambda wc: None))
    summary = env.submit(autostop=True)
    return summary.operators["count"]["items_in"] / summary.wall_time


class Latency(SinkFunction):
    def __init__(self, results, **kwargs):
        super().__init__(**kwargs)
        self.results, self.samples = results, []

    def execute(self, sent_ns):
        self.samples.append(time.perf_counter_ns() - sent_ns)

    def finish(self):
        self.results.put(self.samples)


def latency_us(mode: str, seconds: float, chaining: bool = True) -> tuple[float, float]:
    results = create_queue("sage_queue" if mode == "process" else "python_queue",
                           name=f"bench-latency-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    env = LocalEnvironment("bench-latency", mode=mode, config={"chaining": chaining})
    env.from_source(time.perf_counter_ns, delay=0.001).map(lambda t: t).sink(Latency, results)
    env.submit()
    time.sleep(seconds)
    env.stop()
    samples = sorted(results.get(timeout=10))[50:]  # the first ones include start-up
    (results.destroy if hasattr(results, "destroy") else results.close)()
    p99 = samples[int(len(samples) * 0.99)]
    return statistics.median(samples) / 1e3, p99 / 1e3


# -- by hand ----------------------------------------------------------------------------------

def _produce(q, n, batch):
    if batch == 1:
        for i in range(n):
            q.put(POOL[i & 1023])
        q.put(None)
        return
    for start in range(0, n, batch):
        _put_batch(q, [POOL[i & 1023] for i in range(start, min(n, start + batch))])
    q.put(None)


def _take(q, batch):
    if batch == 1:
        return [q.get()]
    if hasattr(q, "get_many"):
        return q.get_many(batch)
    chunk = q.get()
    return [None] if chunk is None else chunk


def _put_batch(q, items):
    q.put_many(items) if hasattr(q, "put_many") else q.put(items)


def _map(q_in, q_out, batch):
    while True:
        items = _take(q_in, batch)
        ended = items[-1] is None
        mapped = [d for d in (items[:-1] if ended else items)]  # the identity map
        if mapped:
            if batch == 1:
                q_out.put(mapped[0])
            else:
                _put_batch(q_out, mapped)
        if ended:
            q_out.put(None)
            return


def _sink(q, batch, done):
    while _take(q, batch)[-1] is not None:
        pass
    done.send(time.perf_counter())


def by_hand_seconds(kind: str, n: int, batch: int) -> float:
    if kind == "mp":
        q1, q2 = FORK.Queue(1024), FORK.Queue(1024)
    else:
        q1 = create_queue("sage_queue", name=f"bench-1-{uuid.uuid4().hex[:8]}", maxsize=1024)
        q2 = create_queue("sage_queue", name=f"bench-2-{uuid.uuid4().hex[:8]}", maxsize=1024)
    recv, send = FORK.Pipe(duplex=False)
    procs = [FORK.Process(target=_produce, args=(q1, n, batch)),
             FORK.Process(target=_map, args=(q1, q2, batch)),
             FORK.Process(target=_sink, args=(q2, batch, send))]
    started = time.perf_counter()
    for p in procs:
        p.start()
    ended = recv.recv()
    for p in procs:
        p.join()
    for q in (q1, q2):
        getattr(q, "destroy", getattr(q, "close", lambda: None))()
    return ended - started


# -- Bytewax ----------------------------------------------------------------------------------

BYTEWAX_FLOW = '''
import time
import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource

N, HEAVY_ROUNDS = {n}, {rounds}
POOL = [{{"id": i, "value": i * 0.5, "name": f"item-{{i}}"}} for i in range(1024)]

def heavy(d):
    x = 0
    for i in range(HEAVY_ROUNDS):
        x += i
    return d

class Null(StatelessSinkPartition):
    def write_batch(self, items):
        pass

class NullSink(DynamicSink):
    def build(self, step_id, worker_index, worker_count):
        return Null()

flow = Dataflow("bench")
items = op.input("in", flow, TestingSource([POOL[i & 1023] for i in range(N)], batch_size=64))
op.output("out", op.map("map", items, heavy if HEAVY_ROUNDS else (lambda d: d)), NullSink())
'''


def bytewax_rate(n: int, processes: int, heavy_rounds: int = 0) -> float | None:
    try:
        import bytewax  # noqa: F401
    except ImportError:
        return None

    def run(count: int) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "bwflow.py"), "w") as f:
                f.write(textwrap.dedent(BYTEWAX_FLOW.format(n=count, rounds=heavy_rounds)))
            cmd = ([sys.executable, "-m", "bytewax.run", "bwflow:flow"] if processes == 1 else
                   [sys.executable, "-m", "bytewax.testing", "bwflow:flow", "-p", str(processes)])
            started = time.perf_counter()
            subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
            return time.perf_counter() - started

    return steady_rate(run, n)


# -- on Ray -----------------------------------------------------------------------------------

def start_two_nodes():
    """A head ("node_a") and one more node ("node_b") on loopback; the driver joins."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"node_a": 64}, "include_dashboard": False})
    cluster.add_node(num_cpus=2, resources={"node_b": 64})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="WARNING")
    return cluster


def remote_rate(n: int, across: bool) -> float:
    from sage.core.api import RemoteEnvironment

    env = RemoteEnvironment("bench")
    (env.from_batch(PoolSource, n).place(node_a=1)
        .map(lambda d: d).place(**({"node_b": 1} if across else {"node_a": 1}))
        .sink(lambda d: None).place(node_a=1))
    return n / env.submit(autostop=True).wall_time


def ray_actors_rate(n: int, batch: int) -> float:
    """source -> map -> sink as plain actors, each call blocking on the next stage's answer
    (ray.get per call): per item when batch is 1, else lists of ``batch`` items."""
    import ray

    @ray.remote(num_cpus=0, resources={"node_a": 1})
    class Sink:
        def __init__(self):
            self.count = 0

        def put(self, items):
            self.count += len(items)

    @ray.remote(num_cpus=0, resources={"node_a": 1})
    class Map:
        def __init__(self, sink):
            self.sink = sink

        def put(self, items):
            ray.get(self.sink.put.remote([d for d in items]))

    @ray.remote(num_cpus=0, resources={"node_a": 1})
    class Source:
        def __init__(self, stage):
            self.stage = stage

        def run(self, n, batch):
            for start in range(0, n, batch):
                ray.get(self.stage.put.remote([POOL[i & 1023] for i in range(start, min(n, start + batch))]))

    sink = Sink.remote()
    source = Source.remote(Map.remote(sink))
    ray.get(source.run.remote(batch, batch))  # actors up and warm before the clock starts
    started = time.perf_counter()
    ray.get(source.run.remote(n, batch))
    rate = n / (time.perf_counter() - started)
    for actor in (source, sink):
        ray.kill(actor)
    return rate


def ray_section(n: int, repeat: int) -> None:
    import ray

    cluster = start_two_nodes()
    try:
        one = best(repeat, lambda: remote_rate(n, across=False))
        two = best(repeat, lambda: remote_rate(n, across=True))
        per_item = best(repeat, lambda: ray_actors_rate(max(500, n // 100), 1))
        batched = best(repeat, lambda: ray_actors_rate(n // 4, 64))
    finally:
        ray.shutdown()
        cluster.shutdown()
    print("(ray) source -> map -> sink on Ray, small dicts   items/s   one node vs it")
    print(f"    {'RemoteEnvironment, one node':38} {fmt(one)}")
    print(f"    {'RemoteEnvironment, across two nodes':38} {fmt(two)}   {ratio(one, two)}")
    print(f"    {'Ray actors, a call per item':38} {fmt(per_item)}   {ratio(one, per_item)}")
    print(f"    {'Ray actors, a call per 64 items':38} {fmt(batched)}   {ratio(one, batched)}")
    print("    targets (one node): >= 50x a call per item, >= 2x a call per 64 items\n")


# -- report -----------------------------------------------------------------------------------

def fmt(rate: float | None) -> str:
    return "not installed" if rate is None else f"{rate:>12,.0f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="a,b,c,d,ray", help="scenarios, e.g. a,d or ray")
    args = parser.parse_args(argv)
    n = 50_000 if args.quick else 200_000
    only = set(args.only.split(","))
    r = args.repeat
    print(f"pipeline_bench: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
          f"n={n:,}, {r} runs per cell (b, c: the best)\n")
    if "a" in only:
        n_a = 5 * n  # the fastest cells need a million items for a difference of 0.2 s

        def runtime(mode, chaining=True):
            return lambda: steady_rate(lambda k: runtime_seconds(mode, k, chaining=chaining), n_a)

        def by_hand(kind, count, batch):
            return lambda: steady_rate(lambda k: by_hand_seconds(kind, k, batch), count)

        cells = {
            "runtime, process mode": runtime("process"),
            "runtime, process mode, unchained": runtime("process", chaining=False),
            "runtime, thread mode": runtime("thread"),
            "runtime, thread mode, unchained": runtime("thread", chaining=False),
            "multiprocessing.Queue per item": by_hand("mp", n, 1),
            "multiprocessing.Queue batches of 64": by_hand("mp", n_a, 64),
            "SageQueue per item": by_hand("sage", n_a, 1),
            "SageQueue put_many/get_many 64": by_hand("sage", n_a, 64),
            "Bytewax, 1 worker": lambda: bytewax_rate(n_a, 1),
            "Bytewax, 2 processes": lambda: bytewax_rate(n, 2),
        }
        # Rounds: every cell once per round, so a burst of load on the shared machine
        # hits neighbours alike; a ratio is the median of the rounds' ratios.
        rounds = [{name: cell() for name, cell in cells.items()} for _ in range(r)]
        print(f"(a) source -> map -> sink, small dicts (up to {n_a:,})   best items/s   "
              "process mode vs it (median of rounds)")
        for name in cells:
            rates = [one[name] for one in rounds]
            if None in rates:
                print(f"    {name:38} {fmt(None)}")
                continue
            ratios = [one["runtime, process mode"] / one[name] for one in rounds]
            print(f"    {name:38} {fmt(max(rates))}   {statistics.median(ratios):.2f}x "
                  f"({min(ratios):.2f}..{max(ratios):.2f})")
        print("    targets: >= 10x mp.Queue per item, >= 0.7x SageQueue x64, >= 1x Bytewax 1 worker\n")
    if "b" in only:
        heavy = burn_calibrated(20.0)
        m = n // 5
        process = best(r, lambda: steady_rate(lambda k: runtime_seconds("process", k, 2, heavy), m))
        thread = best(r, lambda: steady_rate(lambda k: runtime_seconds("thread", k, 2, heavy), m))
        bw = bytewax_rate(m, 1, heavy.rounds)
        print("(b) CPU-heavy map (~20 us/item), parallelism 2  items/s   process mode vs it")
        print(f"    {'runtime, process mode':38} {fmt(process)}")
        print(f"    {'runtime, thread mode':38} {fmt(thread)}   {ratio(process, thread)}")
        print(f"    {'Bytewax, 1 worker':38} {fmt(bw)}   {ratio(process, bw)}")
        print("    targets: >= 1.7x thread mode, >= 1.7x Bytewax 1 worker\n")
    if "c" in only:
        lines = n // 9
        process = best(r, lambda: wordcount_rate("process", lines))
        thread = best(r, lambda: wordcount_rate("thread", lines))
        print("(c) word count with keyby (words/s)")
        print(f"    {'runtime, process mode':38} {fmt(process)}")
        print(f"    {'runtime, thread mode':38} {fmt(thread)}   {ratio(process, thread)}\n")
    if "d" in only:
        print("(d) source -> map -> sink latency at ~1,000 items/s     p50 us     p99 us")
        for mode in ("process", "thread"):
            for chaining in (True, False):
                p50, p99 = latency_us(mode, 1.0 if args.quick else 3.0, chaining)
                label = f"runtime, {mode} mode{'' if chaining else ', unchained'}"
                print(f"    {label:41} {p50:>10.1f} {p99:>10.1f}")
        print("    targets: p50 <= 50 us, p99 <= 500 us\n")
    if "ray" in only:
        ray_section(n, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
