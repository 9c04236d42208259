"""Queue tooling behind the `sage` command: the backend report and a side-by-side bench."""

from __future__ import annotations

import multiprocessing as mp
import queue as stdlib_queue
import threading
import time

from .queue_adapter import create_queue, get_queue_backend_info, get_queue_backends

__all__ = ["format_backend_info", "bench_backends", "format_bench"]

SMALL_ITEM = {"id": 0, "ts": 1.5, "tag": "abc", "vals": [1, 2, 3]}


def format_backend_info(info: dict | None = None) -> str:
    info = info or get_queue_backend_info()
    native = info["native_extension"]
    lines = [
        f"current backend : {info['current_backend']}  ({info['reason']})",
        f"install profile : {info['profile'] or 'none recorded'}",
        f"native module   : {'built, ' + native['path'] if native['available'] else 'not built'}",
        f"python          : {info['python']}",
        "backends:",
    ]
    for name, detail in info["details"].items():
        mark = "yes" if detail["available"] else "no "
        hint = "" if detail["available"] else f"  -> {detail['install_hint']}"
        lines.append(f"  {name:<13} available: {mark}  {detail['summary']}{hint}")
    lines.append("settings:")
    for key, setting in info["settings"].items():
        lines.append(f"  {key:<15} = {setting['value']!r:<12} from {setting['source']}")
    return "\n".join(lines)


# -- bench: producer in another process (sage), Ray task (ray) or thread (python) ----

def _produce(q, count: int, batch: int) -> None:
    if batch == 1:
        for _ in range(count):
            q.put(SMALL_ITEM)
    else:
        chunk = [SMALL_ITEM] * batch
        for _ in range(count // batch):
            q.put_many(chunk)
    q.put(None)


def _consume(q, batch: int) -> int:
    received = 0
    while True:
        items = [q.get(timeout=120)] if batch == 1 else q.get_many(batch, timeout=120)
        for item in items:
            if item is None:
                return received
            received += 1


def _start_producer(backend: str, q, count: int, batch: int):
    """Start the producer where the backend is meant to be used; returns a join() callable."""
    if backend == "sage_queue":
        proc = mp.get_context("spawn").Process(target=_produce, args=(q, count, batch))
        proc.start()
        return lambda: proc.join(120)
    if backend == "ray_queue":
        import ray

        ref = ray.remote(_produce).remote(q, count, batch)
        return lambda: ray.get(ref, timeout=120)
    thread = threading.Thread(target=_produce, args=(q, count, batch))
    thread.start()
    return lambda: thread.join(120)


def bench_backends(backends=None, count: int = 100_000, ray_count: int = 2_000,
                   batches=(1, 64)) -> list[dict]:
    """Items/s for one producer and one consumer of small dicts, per backend and batch size."""
    available = [n for n, d in get_queue_backends().items() if d["available"]]
    results = []
    for backend in backends or available:
        for batch in batches:
            n = ray_count if backend == "ray_queue" and batch == 1 else count
            n -= n % batch
            q = create_queue(backend)
            try:
                start = time.perf_counter()
                join = _start_producer(backend, q, n, batch)
                received = _consume(q, batch)
                seconds = time.perf_counter() - start
                join()
            except (stdlib_queue.Empty, OSError, RuntimeError) as exc:
                results.append(dict(backend=backend, batch=batch, items=n, error=str(exc)))
                continue
            finally:
                getattr(q, "destroy", q.close)()
            if received != n:
                results.append(dict(backend=backend, batch=batch, items=n,
                                    error=f"received {received} of {n} items"))
                continue
            results.append(dict(backend=backend, batch=batch, items=n, seconds=seconds,
                                items_per_s=n / seconds))
    return results


def format_bench(results: list[dict]) -> str:
    fastest = max((r.get("items_per_s", 0) for r in results), default=0) or 1
    lines = [f"{'backend':<13} {'batch':>5} {'items':>9} {'items/s':>12} {'vs fastest':>10}"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['backend']:<13} {r['batch']:>5} {r['items']:>9}  FAILED: {r['error']}")
            continue
        lines.append(f"{r['backend']:<13} {r['batch']:>5} {r['items']:>9} "
                     f"{r['items_per_s']:>12,.0f} {r['items_per_s'] / fastest:>9.2f}x")
    lines.append("(1 producer, 1 consumer, small dicts; sage_queue across processes, "
                 "ray_queue from a Ray task, python_queue between threads)")
    return "\n".join(lines)
