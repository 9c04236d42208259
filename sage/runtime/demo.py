"""The demo pipeline (``python -m sage.runtime.demo``; meant for ``sage demo``).

Word count over a built-in corpus: lines -> tokenize (flatmap, parallelism 2) -> keyby
word (parallelism 2) -> count (parallelism 2) -> top-k sink. Each stage's items and
items/s show live while it runs (a rich table on a terminal where rich is installed,
plain lines otherwise), a table at the end, and the counts are checked against a
one-process count. Process mode (the native queue) where it is built, threads elsewhere;
``--remote [ADDRESS]`` runs it on Ray (RemoteEnvironment: each instance an actor), on the
cluster at ADDRESS, else SAGE_QUEUE_RAY_ADDRESS, else a local Ray on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
import uuid

from sage.core.api import JobFailedError, LocalEnvironment, RemoteEnvironment
from sage.core.function import BatchFunction, MapFunction, SinkFunction
from sage.utils import create_queue, is_sage_queue_available

__all__ = ["main", "corpus_line", "run_demo"]

# The corpus: lines made from this passage's words, in an order that changes per line.
PASSAGE = """streams of records flow from sources through operators to sinks each operator
runs as parallel instances that read a queue and write to the queues of the next stage the
router sends every record to one instance by round robin or by the hash of its key or to all
instances at once and the end of each stream travels behind its data so nothing is lost when
a source finishes or the job is stopped services answer requests from any operator"""
WORDS = PASSAGE.split()
WORDS_PER_LINE = 9
STAGES = ("corpus", "tokenize", "keyby", "count", "top-k")


def corpus_line(index: int) -> str:
    start = (index * 7919) % len(WORDS)
    return " ".join(WORDS[(start + k * k * 3 + index % 5) % len(WORDS)]
                    for k in range(WORDS_PER_LINE))


class Corpus(BatchFunction):
    def __init__(self, lines: int, **kwargs):
        super().__init__(**kwargs)
        self.next_line, self.lines = 0, lines

    def execute(self):
        if self.next_line >= self.lines:
            return None
        self.next_line += 1
        return corpus_line(self.next_line - 1)


class CountWords(MapFunction):
    """Counts the words its keyed input brings (every word lands in one instance); passes
    the counts on at the end of the stream."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counts = collections.Counter()

    def execute(self, word):
        self.counts[word] += 1

    def finish(self):
        return list(self.counts.items())


class TopK(SinkFunction):
    """Gathers the final counts and hands them to the driver through a queue."""

    def __init__(self, results, **kwargs):
        super().__init__(**kwargs)
        self.results = results
        self.counts: dict = {}

    def execute(self, word_count):
        word, count = word_count
        self.counts[word] = count

    def finish(self):
        self.results.put(self.counts)


def _stage_totals(metrics) -> dict:
    totals = {stage: [0, 0, 0] for stage in STAGES}  # items in, items out, parallelism
    for m in metrics:
        entry = totals[m.operator]
        entry[0] += m.items_in
        entry[1] += m.items_out
        entry[2] += 1
    return totals


class Progress:
    """One line per stage, redrawn in place on a terminal; a line a second elsewhere."""

    def __init__(self, out):
        self.out = out
        self.tty = out.isatty()
        self.drawn = 0
        self.last_line_at = 0.0

    def show(self, totals: dict, elapsed: float) -> None:
        if self.tty:
            lines = [f"  {stage:9} {n_in:>12,} in {n_out:>12,} out "
                     f"{n_in / max(elapsed, 1e-9):>12,.0f} in/s"
                     for stage, (n_in, n_out, _) in totals.items()]
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}A")
            self.out.write("\n".join(f"{line}\x1b[K" for line in lines) + "\n")
            self.drawn = len(lines)
        elif elapsed - self.last_line_at >= 1.0:
            self.last_line_at = elapsed
            self.out.write(f"  {elapsed:5.1f} s: " + ", ".join(
                f"{stage} {n_in:,} in" for stage, (n_in, _, _) in totals.items()) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class RichProgress:
    """The same, as a live rich table (where rich is installed and out is a terminal)."""

    def __init__(self, out):
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=Console(file=out), refresh_per_second=8, transient=False)
        self.live.start()

    def show(self, totals: dict, elapsed: float) -> None:
        from rich.table import Table

        table = Table(title=f"sage demo, {elapsed:5.1f} s")
        for column in ("stage", "parallelism", "items in", "items out", "items/s"):
            table.add_column(column, justify="left" if column == "stage" else "right")
        for stage, (n_in, n_out, parallelism) in totals.items():
            rate = (n_in or n_out) / max(elapsed, 1e-9)
            table.add_row(stage, str(parallelism), f"{n_in:,}", f"{n_out:,}", f"{rate:,.0f}")
        self.live.update(table)

    def close(self) -> None:
        self.live.stop()


def _progress(out):
    if out.isatty():
        try:
            return RichProgress(out)
        except ImportError:  # rich is optional: plain lines do the same
            pass
    return Progress(out)


def run_demo(lines: int, mode: str, top: int = 10, out=None, address: str | None = None) -> int:
    """``mode`` "remote": on Ray, at ``address`` (else the configured or a local Ray)."""
    out = out or sys.stdout
    name = f"sage-demo-results-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if mode == "remote":
        from sage.runtime.ray_connect import connect

        env = RemoteEnvironment("sage-demo", address=address)
        where = f"on Ray at {connect(address)}"  # joined before the results queue is made
        results = create_queue("ray_queue", name=name)
    else:
        env = LocalEnvironment("sage-demo", mode=mode)
        where = f"{mode} mode ({'sage_queue' if mode == 'process' else 'python_queue'})"
        results = create_queue("sage_queue" if mode == "process" else "python_queue", name=name)
    (env.from_batch(Corpus, lines, name="corpus")
        .flatmap(str.split, parallelism=2, name="tokenize")
        .keyby(lambda word: word, parallelism=2, name="keyby")
        .map(CountWords, parallelism=2, name="count")
        .sink(TopK, results, name="top-k"))
    out.write(f"sage demo: word count over {lines:,} lines, {where}\n")
    progress = _progress(out)
    started = time.monotonic()
    try:
        job = env.submit()
        while True:
            progress.show(_stage_totals(job.metrics()), time.monotonic() - started)
            try:
                summary = job.wait(timeout=0.2)  # the display's refresh
                break
            except TimeoutError:
                continue
        progress.show(_stage_totals(job.metrics()), summary.wall_time)
        counts = results.get(timeout=10)
    except JobFailedError as exc:
        out.write(f"sage demo: the pipeline failed: {exc}\n")
        return 1
    finally:
        progress.close()
        env.close()
        (results.destroy if hasattr(results, "destroy") else results.close)()
    _report(summary, counts, lines, top, out)
    expected = collections.Counter(w for i in range(lines) for w in corpus_line(i).split())
    if counts != dict(expected):
        out.write("check: FAILED: the counts differ from a one-process count\n")
        return 1
    out.write(f"check: the counts match a one-process count ({sum(expected.values()):,} words, "
              f"{len(expected)} distinct)\n")
    return 0


def _report(summary, counts: dict, lines: int, top: int, out) -> None:
    wall = summary.wall_time
    out.write(f"\n{'stage':10} {'parallelism':>11} {'items in':>12} {'items out':>12} "
              f"{'items/s':>12}\n")
    for stage in STAGES:
        op = summary.operators[stage]
        moved = op["items_in"] or op["items_out"]
        out.write(f"{stage:10} {op['parallelism']:>11} {op['items_in']:>12,} "
                  f"{op['items_out']:>12,} {moved / max(wall, 1e-9):>12,.0f}\n")
    out.write(f"wall time {wall:.2f} s\n\ntop {top} words:\n")
    for word, count in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))[:top]:
        out.write(f"  {word:12} {count:>10,}\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sage demo", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["auto", "thread", "process"], default="auto",
                        help="auto: process where the native queue is built, else thread")
    parser.add_argument("--lines", type=int, default=200_000, help="corpus lines (default 200,000)")
    parser.add_argument("--top", type=int, default=10, help="words in the final list")
    parser.add_argument("--remote", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on Ray: the cluster at ADDRESS, else SAGE_QUEUE_RAY_ADDRESS, "
                             "else a local Ray on 127.0.0.1")
    args = parser.parse_args(argv)
    if args.lines < 0 or args.top < 0:
        parser.error("--lines and --top must be >= 0")
    if args.remote is not None:
        try:
            return run_demo(args.lines, "remote", args.top, address=args.remote or None)
        except ConnectionError as exc:  # no cluster at the address: say so, no traceback
            print(f"sage demo: {exc}", file=sys.stderr)
            return 2
    mode = args.mode
    if mode == "auto":
        mode = "process" if is_sage_queue_available() else "thread"
    return run_demo(args.lines, mode, args.top)


if __name__ == "__main__":
    sys.exit(main())
