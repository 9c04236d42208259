"""BaseTask: the loop of one operator instance, the same in a thread or a process.

A task owns its input queue, its operator (the function, constructed here) and its
router. Its loop takes what is queued (a batch when there is one), runs the function on
each item and hands the output to the router; when its input is momentarily empty it
flushes the router, so batches never wait for more input. It finishes when it has counted
one end marker per upstream instance per input (markers travel behind the data, so
everything before them has been handled), calls the function's finish(), then sends its
own markers downstream.
A source loops over its function instead, until it ends or the job's stop event is set.
"""

from __future__ import annotations

import logging
import queue

from ..operator import build_operator
from ..router.router import OutEdge, Router
from ..service.service_caller import ServiceCaller, ServiceProxies

__all__ = ["BaseTask", "TaskContext", "IN", "OUT", "ERRORS", "FIELDS"]

IN, OUT, ERRORS = 0, 1, 2  # counter fields of one instance's slot
FIELDS = 3
_MAX_IDLE_PAUSE = 0.05  # a source whose function has nothing: longest pause between calls


class TaskContext:
    """What a function sees as ``self.ctx``."""

    def __init__(self, name: str, parallel_index: int, parallelism: int, env_name: str,
                 caller: ServiceCaller | None):
        self.name = name
        self.parallel_index = parallel_index
        self.parallelism = parallelism
        self.env_name = env_name
        self.logger = logging.getLogger(f"sage.{env_name}.{name}")
        self._caller = caller

    def _proxies(self, asynchronous: bool) -> ServiceProxies:
        if self._caller is None:
            raise KeyError("no services are registered in this environment")
        return ServiceProxies(self._caller, asynchronous)

    @property
    def call_service(self) -> ServiceProxies:
        return self._proxies(False)

    @property
    def call_service_async(self) -> ServiceProxies:
        return self._proxies(True)

    def __repr__(self) -> str:
        return f"TaskContext({self.name}[{self.parallel_index}/{self.parallelism}])"


class BaseTask:
    """One operator instance's loop. ``wiring`` holds its queues (see Job._wire)."""

    def __init__(self, spec, wiring, stop_event, counters, batch_size: int, env_name: str):
        self.spec = spec
        self.key = spec.key
        self.wiring = wiring
        self.stop_event = stop_event
        self.counters = counters
        self.batch_size = batch_size
        self.env_name = env_name
        self._base = spec.slot * FIELDS

    def make_caller(self) -> ServiceCaller | None:
        if self.wiring.response_queue is None:
            return None
        return ServiceCaller(self.spec.slot, self.wiring.response_queue,
                             self.wiring.request_queues, owner=self.key)

    def run(self) -> None:
        node = self.spec.node
        caller = self.make_caller()
        try:
            ctx = TaskContext(node.name, self.spec.index, node.parallelism, self.env_name, caller)
            router = Router([OutEdge(*edge, batch_size=self.batch_size)
                             for edge in self.wiring.out_edges])
            operator = build_operator(node, self.spec.index, router, ctx)
            if node.is_source:
                self._run_source(operator, router)
            else:
                self._run_inputs(operator, router)
            operator.finish()
            router.end(self.key)
            self.counters[self._base + OUT] = router.emitted
        finally:
            if caller is not None:
                caller.close()

    def _run_source(self, operator, router) -> None:
        stop = self.stop_event
        delay = self.spec.node.delay
        per_call = 1 if delay else self.batch_size
        counters, out = self.counters, self._base + OUT
        pause = 0.0
        while not stop.is_set():
            produced = operator.produce(per_call)
            router.flush()  # a source never knows when its next item comes: send now
            counters[out] = router.emitted
            if operator.ended:
                return
            if delay:
                stop.wait(delay)
            elif produced == 0:  # the function had nothing: back off, up to 50 ms
                pause = min(max(pause * 2, 0.001), _MAX_IDLE_PAUSE)
                stop.wait(pause)
            else:
                pause = 0.0

    def _run_inputs(self, operator, router) -> None:
        source = self.wiring.input_queue
        take = self.batch_size * 4  # read what is there, up to 4 batches a call: +30% items/s
        process = operator.process
        counters, base = self.counters, self._base
        ends_left = self.spec.ends_expected
        while ends_left:
            batch = source.get_many(take)  # blocks until there is something
            while True:
                ends = process(batch)  # end markers come last from each upstream instance
                counters[base + IN] += len(batch) - ends
                ends_left -= ends
                if not ends_left:
                    break
                # input momentarily empty: flush, nothing to wait for. qsize() first: an
                # Empty raised by get_many costs ~3 us and, measured, ~15 us of latency;
                # it can still come (a record reserved but not yet committed counts in qsize)
                if not source.qsize():
                    router.flush()
                    break
                try:
                    batch = source.get_many(take, False)
                except queue.Empty:
                    router.flush()
                    break
            counters[base + OUT] = router.emitted
