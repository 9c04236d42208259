"""RayTask: one operator instance or one service of a job, as a Ray actor.

The actor runs the loops every task runs (BaseTask, ServiceTask) over queues it opens on
its own node from their descriptions (QueueSpec): a sage_queue by name (its segment is in
this node's /dev/shm), a ray_queue by its actor's name in the job's namespace. The queue
adapter opens both; nothing here knows a backend.

The driver (ray_job.py) calls, in this order: where() once the actor is placed;
create_queues() for the queues this task reads (so each queue lives on its reader's
node, and a ray_queue's actor is owned by its reader and dies with it); run_operator() or
run_service(), which return when the loop ends; release(). stop_sources(), stop_service(),
metrics() and abort() arrive while run_* is in progress: the job makes the actor
threaded (max_concurrency) so they are served meanwhile. This class is plain Python; the
job applies ray.remote to it, so importing it needs no Ray.
"""

from __future__ import annotations

import logging
import os
import threading
import types

from sage.utils import QueueClosed, create_queue, is_sage_queue_available

from ..service.base_service_task import ServiceTask
from ..service.service_caller import STOP_REQUEST, ServiceCaller
from .base_task import ERRORS, FIELDS, IN, OUT, BaseTask, TaskContext
from .local_task import _guarded

__all__ = ["RayTask", "shm_key", "destroy_segments"]

log = logging.getLogger("sage.runtime")
SHM_DIR = "/dev/shm"


def shm_key() -> str:
    """Which /dev/shm this process sees: the same on every node of one host (a loopback
    cluster), different across hosts and containers. Segments of a node that is gone can
    still be removed by any process with the same key."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "?"
    try:
        st = os.stat(SHM_DIR)
        return f"{boot}:{st.st_dev}:{st.st_ino}"
    except OSError:
        return f"{boot}:no-shm"


def destroy_segments(specs: list) -> list:
    """Remove these sage_queue segments from this host's /dev/shm (opening one that is
    already gone makes it again, briefly); the names removed. Runs in the driver for its
    own host, or as a Ray task pinned to the node."""
    done = []
    for spec in specs:
        try:
            create_queue("sage_queue", **spec.create_options()).destroy()
            done.append(spec.name)
        except (OSError, ValueError) as exc:
            log.warning("sage: could not remove queue %s: %s", spec.name, exc)
    return done


class _NoDepth:
    """A ray_queue input, read by the task loop. The loop asks qsize() after each batch to
    know whether to flush its router; on a ray_queue that is another actor call per batch,
    so this says 0: the router flushes after every batch taken, which the batch pays for."""

    def __init__(self, q):
        self.q = q
        self.get_many = q.get_many
        self.close = q.close

    def qsize(self) -> int:
        return 0


class RayTask:
    def __init__(self, key: str, operator: str, instance: int):
        self.key, self.operator, self.instance = key, operator, instance
        self._stop = threading.Event()
        self._queues: dict = {}  # name -> the queue as opened here
        self._owned: dict = {}  # name -> QueueSpec of the queues this task reads
        self._lock = threading.Lock()
        self._counters: list = [0] * FIELDS
        self._base = 0
        self._input = None
        self._request_queue = None

    # -- placement and queues ------------------------------------------------------------

    def where(self) -> dict:
        import ray

        ctx = ray.get_runtime_context()
        return dict(node_id=ctx.get_node_id(), ip=ray.util.get_node_ip_address(),
                    pid=os.getpid(), shm_key=shm_key(), sage_queue=is_sage_queue_available())

    def _open(self, spec):
        with self._lock:
            q = self._queues.get(spec.name)
            if q is None:
                q = self._queues[spec.name] = create_queue(spec.transport,
                                                           **spec.create_options())
            return q

    def create_queues(self, specs: list) -> None:
        """Create the queues this task reads, here on its node, before any writer opens them."""
        for spec in specs:
            self._owned[spec.name] = spec
            self._open(spec)

    # -- the loops -----------------------------------------------------------------------

    def run_operator(self, spec, out_edges: list, links, batch_size: int, env_name: str):
        """The instance's loop (BaseTask.run). ``out_edges``: (input_index, routing, queue
        names, target, tagged) per edge; ``links``: the queues it uses (ray_placement.Links).
        Returns (failure fields or None, counters)."""
        self._counters = [0] * ((spec.slot + 1) * FIELDS)
        self._base = spec.slot * FIELDS

        def body():
            wiring = self._wiring(links, out_edges)
            BaseTask(spec, wiring, self._stop, self._counters, batch_size, env_name).run()

        return self._finish(_guarded(body, self.operator, self.instance))

    def run_service(self, spec, links, env_name: str):
        """The service's loop (ServiceTask.run), answering on every caller's reply queue."""
        def body():
            wiring = self._wiring(links, [])
            responses = {slot: self._open(links.specs[name])
                         for slot, name in links.replies.items()}
            caller = None
            if wiring.response_queue is not None:  # services call services too
                caller = ServiceCaller(spec.slot, wiring.response_queue,
                                       wiring.request_queues, owner=self.key)
            ctx = TaskContext(spec.decl.name, 0, 1, env_name, caller)
            self._request_queue = self._input
            try:
                ServiceTask(spec, self._input, responses, ctx, crosses_processes=True).run()
            finally:
                if caller is not None:
                    caller.close()

        return self._finish(_guarded(body, self.operator, self.instance))

    def _wiring(self, links, out_edges: list):
        specs = links.specs
        self._input = self._open(specs[links.input]) if links.input else None
        input_queue = self._input
        if input_queue is not None and specs[links.input].transport == "ray_queue":
            input_queue = _NoDepth(input_queue)
        return types.SimpleNamespace(
            input_queue=input_queue,
            out_edges=[(index, routing, [self._open(specs[n]) for n in names], target, tagged)
                       for index, routing, names, target, tagged in out_edges],
            response_queue=self._open(specs[links.reply]) if links.reply else None,
            request_queues={service: self._open(specs[name])
                            for service, name in links.requests.items()})

    def _finish(self, failure):
        counters = self._counters[self._base:self._base + FIELDS]
        return (failure.as_tuple() if failure is not None else None), counters

    # -- while it runs -------------------------------------------------------------------

    def stop_sources(self) -> None:
        """A source ends at its next call; what it produced still flows to the sinks."""
        self._stop.set()

    def stop_service(self) -> None:
        """Behind every request queued so far (the operators have all ended)."""
        if self._request_queue is not None:
            try:
                self._request_queue.put(STOP_REQUEST)
            except QueueClosed:
                pass

    def metrics(self) -> tuple:
        base = self._base
        depth = 0
        if self._input is not None:
            try:
                depth = self._input.qsize()
            except Exception:  # noqa: BLE001 - a queue being torn down has no depth
                depth = 0
        c = self._counters
        return c[base + IN], c[base + OUT], c[base + ERRORS], depth

    def abort(self) -> None:
        """End the loop: sources stop, every queue this task holds is closed (closing is
        for every process), so whatever blocks on one wakes with QueueClosed."""
        self._stop.set()
        for q in list(self._queues.values()):
            try:
                q.close()
            except Exception as exc:  # noqa: BLE001 - gone already (its node, its actor)
                log.debug("sage %s abort: %s", self.key, exc)

    def release(self) -> list:
        """Remove the queues this task created (after the loops have ended); the names."""
        removed = []
        for name in self._owned:
            q = self._queues.get(name)
            try:
                q.destroy()
                removed.append(name)
            except Exception as exc:  # noqa: BLE001 - the driver's cleanup covers it
                log.debug("sage %s release %s: %s", self.key, name, exc)
        for name, q in self._queues.items():
            if name not in self._owned and hasattr(q, "detach"):
                try:
                    q.detach()
                except Exception:  # noqa: BLE001 - detached already
                    pass
        return removed
