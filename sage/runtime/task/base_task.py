"""BaseTask: the loop of one operator instance, the same in a thread or a process.

A task owns its input queue, its operator (the function, constructed here) and its
router. Its loop takes what is queued (a batch when there is one), runs the function on
each item and hands the output to the router; when its input is momentarily empty it
flushes the router, so batches never wait for more input. It finishes when it has counted
one end marker per upstream instance per input (markers travel behind the data, so
everything before them has been handled), calls the function's finish(), then sends its
own markers downstream.
A source loops over its function instead, until it ends or the job's stop event is set.
A task may run a chain of operators (see plan.py): the head takes the input, each one
hands its output to the next through a ChainLink, and the tail's goes to the router.
"""

from __future__ import annotations

import logging
import queue

from ..operator import build_operator
from ..router.chain_link import ChainLink, mark_raised_in
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
    """One task's loop. ``wiring`` holds its queues (see Job._wire); ``chained``: the
    (spec, wiring) of the operator instances chained behind this one, in order."""

    def __init__(self, spec, wiring, stop_event, counters, batch_size: int, env_name: str,
                 chained: tuple = ()):
        self.spec = spec
        self.key = spec.key
        self.wiring = wiring
        self.stop_event = stop_event
        self.counters = counters
        self.batch_size = batch_size
        self.env_name = env_name
        self.members = [(spec, wiring), *chained]
        self._base = spec.slot * FIELDS

    @staticmethod
    def _caller(spec, wiring) -> ServiceCaller | None:
        if wiring.response_queue is None:
            return None
        return ServiceCaller(spec.slot, wiring.response_queue, wiring.request_queues,
                             owner=spec.key)

    def _build(self, callers: list) -> tuple:
        """Operators in declared order (their constructors run so), each emitting into a
        link to the next; the tail into the router."""
        router = Router([OutEdge(*edge, batch_size=self.batch_size)
                         for edge in self.members[-1][1].out_edges])
        links = [ChainLink(spec.node.name, spec.index, self.batch_size)
                 for spec, _ in self.members[1:]]
        operators = []
        for (spec, _), caller, emits_into in zip(self.members, callers, [*links, router],
                                                 strict=True):
            node = spec.node
            ctx = TaskContext(node.name, spec.index, node.parallelism, self.env_name, caller)
            try:
                operators.append(build_operator(node, spec.index, emits_into, ctx))
            except BaseException as exc:
                mark_raised_in(exc, node.name, spec.index)
                raise
        for i, link in enumerate(links):
            link.connect(operators[i + 1], links[i + 1] if i + 1 < len(links) else None)
        return operators, links, router

    def run(self) -> None:
        callers = [self._caller(spec, wiring) for spec, wiring in self.members]
        try:
            operators, links, router = self._build(callers)
            self.links, self.router = links, router
            self._outs = [*links, router]  # what each member emits into, head first
            flush = self._flush if links else router.flush
            if self.spec.node.is_source:
                self._run_source(operators[0], flush)
            else:
                head = operators[0].process
                self._run_inputs(self._chain_step(head) if links else head, flush)
            self._finish(operators)
            self._as_tail(router.end, self.members[-1][0].key)
            self._publish()
        finally:
            for caller in callers:
                if caller is not None:
                    caller.close()

    def _as_tail(self, call, *args) -> None:
        """A router call (its puts) outside the tail's process(): an error in it (an item
        that cannot be pickled, or is larger than a ring) is the tail operator's."""
        try:
            call(*args)
        except BaseException as exc:
            tail = self.members[-1][0]
            mark_raised_in(exc, tail.node.name, tail.index)
            raise

    def _chain_step(self, head_process):
        first = self.links[0]

        def step(batch) -> int:
            """The head takes a batch from the input; the link hands its output down the
            chain (each link the next); the tail's output is in the router."""
            ends = head_process(batch)
            first.hand_on()
            return ends
        return step

    def _flush(self) -> None:
        self.links[0].hand_on()
        self._as_tail(self.router.flush)

    def _finish(self, operators) -> None:
        """Each operator's finish(), head first; what it emits goes down the chain first."""
        for (spec, _), operator, link in zip(self.members, operators, [*self.links, None],
                                             strict=True):
            try:
                operator.finish()
            except BaseException as exc:
                mark_raised_in(exc, spec.node.name, spec.index)
                raise
            if link is not None:
                link.hand_on()

    def _publish(self) -> None:
        """Out counts of every member (a chained member's in is its upstream's out)."""
        counters, outs = self.counters, self._outs
        counters[self._base + OUT] = outs[0].emitted
        for (spec, _), link, out in zip(self.members[1:], self.links, outs[1:], strict=True):
            base = spec.slot * FIELDS
            counters[base + IN] = link.emitted
            counters[base + OUT] = out.emitted

    def _run_source(self, operator, flush) -> None:
        stop = self.stop_event
        delay = self.spec.node.delay
        per_call = 1 if delay else self.batch_size
        publish = self._publish
        pause = 0.0
        while not stop.is_set():
            produced = operator.produce(per_call)
            flush()  # a source never knows when its next item comes: send now
            publish()
            if operator.ended:
                return
            if delay:
                stop.wait(delay)
            elif produced == 0:  # the function had nothing: back off, up to 50 ms
                pause = min(max(pause * 2, 0.001), _MAX_IDLE_PAUSE)
                stop.wait(pause)
            else:
                pause = 0.0

    def _run_inputs(self, process, flush) -> None:
        source = self.wiring.input_queue
        take = self.batch_size * 4  # read what is there, up to 4 batches a call: +30% items/s
        counters, base = self.counters, self._base
        publish = self._publish
        ends_left = self.spec.ends_expected
        while ends_left:
            batch = source.get_many(take)  # blocks until there is something
            while True:
                ends = process(batch)  # end markers come last from each upstream instance
                counters[base + IN] += len(batch) - ends
                publish()  # live counts, even while the input never runs dry
                ends_left -= ends
                if not ends_left:
                    break
                # input momentarily empty: flush, nothing to wait for. qsize() first: an
                # Empty raised by get_many costs ~3 us and, measured, ~15 us of latency;
                # it can still come (a record reserved but not yet committed counts in qsize)
                if not source.qsize():
                    flush()
                    break
                try:
                    batch = source.get_many(take, False)
                except queue.Empty:
                    flush()
                    break
