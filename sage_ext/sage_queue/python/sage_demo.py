"""Producer and consumer processes on one SageQueue, with live progress and throughput.

    python -m sage_ext.sage_queue.python.sage_demo [--items N] [--producers P]
        [--consumers C] [--payload-bytes B] [--batch K]

Each item is bytes: an 8-byte header (producer id, sequence number) and the payload.
Consumers record every (producer, sequence) they get; the parent checks that each
was delivered exactly once and exits non-zero if not.
"""

from __future__ import annotations

import argparse
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


def _produce(q: SageQueue, producer: int, count: int, payload_bytes: int, batch: int, go, running) -> None:
    payload = os.urandom(payload_bytes)
    go.wait()
    try:
        for start in range(0, count, batch):
            q.put_many([_HEADER.pack(producer, seq) + payload for seq in range(start, min(start + batch, count))])
        with running.get_lock():
            running.value -= 1
            if running.value == 0:
                q.close()  # the last producer is done: consumers drain the queue, then stop
    finally:
        q.detach()  # multiprocessing ends children with os._exit: no finalizers run


def _consume(q: SageQueue, results: SageQueue, consumer: int, items: int, producers: int,
             payload_bytes: int, batch: int) -> None:
    # seen[first index of producer p + seq] counts deliveries of that item
    first = [_share(items, producers, p)[0] for p in range(producers)]
    counts = [_share(items, producers, p)[1] for p in range(producers)]
    seen = bytearray(items)
    malformed = 0
    size = _HEADER.size + payload_bytes
    try:
        while True:
            for item in q.get_many(batch):
                producer, seq = _HEADER.unpack_from(item)
                if len(item) != size or producer >= producers or seq >= counts[producer]:
                    malformed += 1
                    continue
                i = first[producer] + seq
                seen[i] = min(seen[i] + 1, 255)
    except QueueClosed:  # drained: every producer is done
        pass
    results.put((consumer, malformed, seen))
    q.detach()
    results.detach()


def run_demo(items: int = 200_000, producers: int = 2, consumers: int = 2, payload_bytes: int = 256,
             batch: int = 64, report=print) -> dict:
    """Run the pipeline; returns counts, timing and ``ok`` (every item delivered exactly once).

    ``report`` gets one progress line a second and the final line (None: silent).
    """
    if items < 1 or producers < 1 or consumers < 1 or batch < 1 or payload_bytes < 0:
        raise ValueError("items, producers, consumers and batch must be >= 1, payload_bytes >= 0")
    report = report or (lambda line: None)
    record = _HEADER.size + payload_bytes + 64  # with the ring's record header, rounded up
    capacity = max(DEFAULT_CAPACITY_BYTES, 4 * batch * record)
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    q = SageQueue(f"sage_demo-{tag}", capacity_bytes=capacity)
    results = SageQueue(f"sage_demo-results-{tag}", capacity_bytes=max(DEFAULT_CAPACITY_BYTES, 4 * items))
    go = multiprocessing.Event()
    running = multiprocessing.Value("i", producers)
    procs = [multiprocessing.Process(target=_produce, args=(q, p, _share(items, producers, p)[1],
                                                             payload_bytes, batch, go, running), daemon=True)
             for p in range(producers)]
    procs += [multiprocessing.Process(target=_consume, args=(q, results, c, items, producers,
                                                              payload_bytes, batch), daemon=True)
              for c in range(consumers)]
    try:
        for p in procs:
            p.start()
        go.set()
        start = time.monotonic()
        gotten = {}
        while len(gotten) < consumers:
            try:
                consumer, malformed, seen = results.get(timeout=_POLL_SECONDS)
                gotten[consumer] = (malformed, seen)
                continue
            except queue.Empty:  # a second went by
                pass
            if any(p.exitcode not in (None, 0) for p in procs):
                q.close()  # a worker died: stop the others, report what arrived
                if all(p.exitcode is not None for p in procs[producers:]) and results.empty():
                    break
            done = q.stats().gets
            elapsed = time.monotonic() - start
            report(f"{elapsed:6.1f} s  {done:>{len(str(items))}}/{items} items  {done / elapsed:,.0f} items/s")
        elapsed = time.monotonic() - start
        for p in procs:
            p.join(timeout=10)
        failed = [p for p in procs if p.exitcode != 0]
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        q.destroy()
        results.destroy()

    totals = [sum(col) for col in zip(*(seen for _, seen in gotten.values()))] or [0] * items
    lost = totals.count(0)
    duplicated = sum(n - 1 for n in totals if n > 1)
    malformed = sum(m for m, _ in gotten.values())
    ok = not (lost or duplicated or malformed or failed)
    received = items - lost + duplicated
    result = dict(items=items, producers=producers, consumers=consumers, payload_bytes=payload_bytes,
                  batch=batch, seconds=elapsed, received=received, lost=lost, duplicated=duplicated,
                  malformed=malformed, failed_workers=len(failed), ok=ok,
                  items_per_s=received / elapsed, mb_per_s=received * payload_bytes / elapsed / 1e6)
    verdict = ("verified: every item delivered exactly once" if ok else
               f"VERIFICATION FAILED: {lost} lost, {duplicated} duplicated, {malformed} malformed, "
               f"{len(failed)} workers failed")
    report(f"{received} items in {elapsed:.2f} s: {result['items_per_s']:,.0f} items/s, "
           f"{result['mb_per_s']:.1f} MB/s ({producers} producers, {consumers} consumers, "
           f"{payload_bytes}-byte payloads, batch {batch}); {verdict}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sage_ext.sage_queue.python.sage_demo",
                                     description="Producers and consumers on one SageQueue.")
    parser.add_argument("--items", type=int, default=200_000, help="items in total (default 200000)")
    parser.add_argument("--producers", type=int, default=2, help="producer processes (default 2)")
    parser.add_argument("--consumers", type=int, default=2, help="consumer processes (default 2)")
    parser.add_argument("--payload-bytes", type=int, default=256, help="payload per item (default 256)")
    parser.add_argument("--batch", type=int, default=64, help="items per put_many/get_many (default 64)")
    args = parser.parse_args(argv)
    try:
        result = run_demo(args.items, args.producers, args.consumers, args.payload_bytes, args.batch)
    except ValueError as exc:
        parser.error(str(exc))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
