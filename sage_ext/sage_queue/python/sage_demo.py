"""Producer and consumer processes on one SageQueue, with live progress and throughput.

    python -m sage_ext.sage_queue.python.sage_demo [--items N] [--producers P]
        [--consumers C] [--payload-bytes B] [--batch K]

Each item is bytes: an 8-byte header (producer id, sequence number) and the payload.
Consumers record every (producer, sequence) they get; the parent checks that each
was delivered exactly once and exits non-zero if not.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import secrets
import struct
import sys
import time

from .sage_queue import DEFAULT_CAPACITY_BYTES, QueueClosed, SageQueue

__all__ = ["run_demo", "main"]

_HEADER = struct.Struct("<II")  # producer id, sequence number
_POLL_SECONDS = 1.0


def _share(items: int, parts: int, k: int) -> tuple[int, int]:
    """(first global index, count) of part k when ``items`` are split into ``parts``."""
    base, extra = divmod(items, parts)
    return k * base + min(k, extra), base + (k < extra)


def _produce(q: SageQueue, producer: int, count: int, payload_bytes: int, batch: int,
             go, running) -> None:
    payload = os.urandom(payload_bytes)
    go.wait()
    try:
        for start in range(0, count, batch):
            end = min(start + batch, count)
            q.put_many([_HEADER.pack(producer, seq) + payload for seq in range(start, end)])
        with running.get_lock():
            running.value -= 1
            if running.value == 0:
                q.close()  # the last producer is done: consumers drain the queue, then stop
    finally:
        q.detach()


def _consume(q: SageQueue, results: SageQueue, consumer: int, items: int, producers: int,
             payload_bytes: int, batch: int) -> None:
    shares = [_share(items, producers, p) for p in range(producers)]
    seen = bytearray(items)  # deliveries of each item, by global index
    malformed = 0
    size = _HEADER.size + payload_bytes
    try:
        while True:
            for item in q.get_many(batch):
                producer, seq = _HEADER.unpack_from(item) if len(item) == size else (producers, 0)
                if producer >= producers or seq >= shares[producer][1]:
                    malformed += 1
                    continue
                i = shares[producer][0] + seq
                seen[i] = min(seen[i] + 1, 255)
    except QueueClosed:  # drained: every producer is done
        pass
    results.put((consumer, malformed, seen))
    q.detach()
    results.detach()


def _collect(q: SageQueue, results: SageQueue, procs, producers: int, items: int, report):
    """Each consumer's record, with progress once a second; returns (seconds, records)."""
    consumers = len(procs) - producers
    start = time.monotonic()
    records = {}
    while len(records) < consumers:
        try:
            consumer, malformed, seen = results.get(timeout=_POLL_SECONDS)
            records[consumer] = (malformed, seen)
            continue
        except queue.Empty:  # a second went by
            pass
        if any(p.exitcode not in (None, 0) for p in procs):
            q.close()  # a worker died: stop the others, verify what arrived
            if all(p.exitcode is not None for p in procs[producers:]) and results.empty():
                break
        done = q.stats().gets
        elapsed = time.monotonic() - start
        report(f"{elapsed:6.1f} s  {done:>{len(str(items))}}/{items} items  "
               f"{done / elapsed:,.0f} items/s")
    return time.monotonic() - start, records


def run_demo(items: int = 200_000, producers: int = 2, consumers: int = 2,
             payload_bytes: int = 256, batch: int = 64, report=print) -> dict:
    """Run the pipeline; returns counts, timing and ``ok`` (every item delivered exactly once).

    ``report`` gets one progress line a second and the final line (None: silent).
    """
    if min(items, producers, consumers, batch) < 1 or payload_bytes < 0:
        raise ValueError("items, producers, consumers and batch must be >= 1, payload_bytes >= 0")
    report = report or (lambda line: None)
    record = _HEADER.size + payload_bytes + 64  # with the ring's record header, rounded up
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    with contextlib.ExitStack() as stack:
        q = SageQueue(f"sage_demo-{tag}",
                      capacity_bytes=max(DEFAULT_CAPACITY_BYTES, 2 * batch * record))
        stack.callback(q.destroy)
        results = SageQueue(f"sage_demo-results-{tag}",
                            capacity_bytes=max(DEFAULT_CAPACITY_BYTES, items + (1 << 20)))
        stack.callback(results.destroy)
        go = multiprocessing.Event()
        running = multiprocessing.Value("i", producers)
        procs = [multiprocessing.Process(
                     target=_produce, daemon=True,
                     args=(q, p, _share(items, producers, p)[1], payload_bytes, batch, go, running))
                 for p in range(producers)]
        procs += [multiprocessing.Process(
                      target=_consume, daemon=True,
                      args=(q, results, c, items, producers, payload_bytes, batch))
                  for c in range(consumers)]
        stack.callback(lambda: [p.kill() for p in procs if p.is_alive()])
        for p in procs:
            p.start()
        go.set()
        seconds, records = _collect(q, results, procs, producers, items, report)
        for p in procs:
            p.join(timeout=10)
        failed = sum(p.exitcode != 0 for p in procs)

    totals = [sum(col) for col in zip(*(seen for _, seen in records.values()), strict=True)] or [0] * items
    lost = totals.count(0)
    duplicated = sum(n - 1 for n in totals if n > 1)
    malformed = sum(m for m, _ in records.values())
    received = items - lost + duplicated
    ok = not (lost or duplicated or malformed or failed)
    result = dict(
        items=items, producers=producers, consumers=consumers, payload_bytes=payload_bytes,
        batch=batch, seconds=seconds, received=received, lost=lost, duplicated=duplicated,
        malformed=malformed, failed_workers=failed, ok=ok, items_per_s=received / seconds,
        mb_per_s=received * payload_bytes / seconds / 1e6)
    verdict = ("verified: every item delivered exactly once" if ok else
               f"VERIFICATION FAILED: {lost} lost, {duplicated} duplicated, "
               f"{malformed} malformed, {failed} workers failed")
    report(f"{received} items in {seconds:.2f} s: {result['items_per_s']:,.0f} items/s, "
           f"{result['mb_per_s']:.1f} MB/s ({producers} producers, {consumers} consumers, "
           f"{payload_bytes}-byte payloads, batch {batch}); {verdict}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sage_ext.sage_queue.python.sage_demo",
                                     description="Producers and consumers on one SageQueue.")
    parser.add_argument("--items", type=int, default=200_000, help="items in all (default 200000)")
    parser.add_argument("--producers", type=int, default=2, help="producer processes (default 2)")
    parser.add_argument("--consumers", type=int, default=2, help="consumer processes (default 2)")
    parser.add_argument("--payload-bytes", type=int, default=256,
                        help="payload bytes per item (default 256)")
    parser.add_argument("--batch", type=int, default=64,
                        help="items per put_many/get_many (default 64)")
    args = parser.parse_args(argv)
    try:
        result = run_demo(args.items, args.producers, args.consumers, args.payload_bytes,
                          args.batch)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:  # e.g. /dev/shm too small for the queue
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
