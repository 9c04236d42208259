"""Job: a planned pipeline running on this machine. start, wait, stop, close.

A job owns everything it starts: its queues (made by the queue adapter), its task threads
or processes, its service tasks and its watcher thread. They all end with it, after a
normal end, a failure, a killed task process or Ctrl-C: close() ends what still runs and
destroys every queue (no /dev/shm segment outlives the job).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import queue
import signal
import threading
import time

from sage.utils import create_queue

from .driver_exit import live_jobs, register_exit_hook, restore_sigterm, unwind_on_sigterm
from .errors import JobFailedError, TaskFailure
from .plan import CHAINED, Plan
from .service.base_service_task import ServiceTask
from .service.service_caller import STOP_REQUEST, ServiceCaller
from .task.base_task import ERRORS, FIELDS, IN, OUT, BaseTask, TaskContext
from .task.local_task import FORK, ProcessTask, ProcessWatcher, ThreadTask

__all__ = ["Job", "JobSummary", "InstanceMetrics", "RuntimeOptions"]

log = logging.getLogger("sage.runtime")
SHM_DIR = "/dev/shm"
MIN_RING_BYTES = 4096  # a ring is whole pages, at least one
_ERROR_QUEUE_BYTES = 256 << 10  # failure reports of task processes (tracebacks)
_SIGNAL_CHECK = 0.5  # seconds: the longest the driver's wait() goes without running handlers


def _quietly(call) -> None:
    """Teardown goes on past a queue that is already gone (detached, destroyed)."""
    try:
        call()
    except (OSError, ValueError) as exc:
        log.debug("sage job teardown: %s", exc)


_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_deferred():
    """Ctrl-C and SIGTERM that arrive meanwhile act at the end of the block, not inside it.
    The main thread's handlers are swapped for ones that take note (masking the signals in
    the main thread alone would not do: the kernel gives them to any thread that does not
    block them, and Python still runs the handler in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run only in the main thread, so they cannot cut this thread short
        return
    arrived: list = []

    def take_note(signum, frame):
        if signum not in arrived:
            arrived.append(signum)

    previous = {}
    for sig in _DEFERRED_SIGNALS:
        handler = signal.getsignal(sig)
        if handler not in (signal.SIG_IGN, None):
            previous[sig] = signal.signal(sig, take_note)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in arrived:
            signal.raise_signal(sig)  # its own handler acts now (raises, as a rule)


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """Sizes of a job's queues; ``LocalEnvironment(config={...})`` sets them by name."""

    batch_size: int = 64  #: packets per put_many toward one downstream instance
    queue_maxsize: int = 1024  #: items per input queue (a full queue blocks its producers)
    # process mode: a dozen instances (24 MiB) fit Docker's default 64 MB /dev/shm; an item
    # larger than its ring is refused in put() with both sizes, so raise it for big items
    queue_capacity_bytes: int = 2 << 20  #: ring of each input queue (process mode)
    #: operator name -> ring of each of its instances' input queues, for the operators whose
    #: items are large; the others get queue_capacity_bytes
    operator_queue_capacity_bytes: dict = dataclasses.field(default_factory=dict)
    service_capacity_bytes: int = 256 << 10  #: ring of each service request/response queue
    stop_timeout: float = 10.0  #: close(): how long a running job may drain before it is ended
    #: run one-to-one operators (equal parallelism, nothing else in between) in one task:
    #: items pass by a call instead of a queue. False: every instance its own task (on Ray
    #: that is always so); DataStream.disable_chaining() keeps one operator apart
    chaining: bool = True

    def __post_init__(self):
        if self.batch_size < 1 or self.queue_maxsize < self.batch_size:
            raise ValueError(f"need 1 <= batch_size ({self.batch_size}) <= queue_maxsize "
                             f"({self.queue_maxsize})")
        if not isinstance(self.chaining, bool):
            raise ValueError(f"chaining must be True or False, got {self.chaining!r}")
        if not isinstance(self.operator_queue_capacity_bytes, dict):
            raise ValueError("operator_queue_capacity_bytes must be a dict of operator name -> bytes")
        for name, size in {"queue_capacity_bytes": self.queue_capacity_bytes,
                           "service_capacity_bytes": self.service_capacity_bytes,
                           **{f"operator_queue_capacity_bytes[{k!r}]": v
                              for k, v in self.operator_queue_capacity_bytes.items()}}.items():
            if isinstance(size, bool) or not isinstance(size, int) or size < MIN_RING_BYTES:
                raise ValueError(f"{name} must be a whole number of bytes >= {MIN_RING_BYTES}, got {size!r}")

    def input_capacity_bytes(self, operator: str) -> int:
        """The ring of each input queue of `operator`'s instances."""
        return self.operator_queue_capacity_bytes.get(operator, self.queue_capacity_bytes)

    def check_operators(self, plan) -> None:
        """Every operator named in operator_queue_capacity_bytes is one of the plan's, and
        takes its items from queues (a ring size for one that does not would do nothing)."""
        names = {i.node.name for i in plan.instances}
        named = set(self.operator_queue_capacity_bytes)
        unknown = sorted(named - names)
        if unknown:
            raise ValueError(f"operator_queue_capacity_bytes names {unknown}, which this pipeline does "
                             f"not have; its operators: {', '.join(sorted(names))}")
        queueless = sorted(named - {i.node.name for i in plan.instances if i.input_queue})
        if queueless:
            raise ValueError(
                f"operator_queue_capacity_bytes names {queueless}, which take no items from a "
                f"queue (a source, or an operator chained into the task of the one before it), "
                f"so the ring would go unused: drop the entry, or give the operator queues of "
                f"its own with .disable_chaining()")


@dataclasses.dataclass(frozen=True)
class InstanceMetrics:
    operator: str
    instance: int
    items_in: int
    items_out: int
    errors: int
    queue_depth: int  #: items waiting in its input queue


@dataclasses.dataclass(frozen=True)
class JobSummary:
    job_id: str
    wall_time: float  #: seconds from start to the end of the last task
    operators: dict  #: name -> {"parallelism", "items_in", "items_out", "errors"}


@dataclasses.dataclass
class _Wiring:
    input_queue: object = None
    out_edges: list = dataclasses.field(default_factory=list)  # OutEdge arguments
    response_queue: object = None
    request_queues: dict = dataclasses.field(default_factory=dict)


class Job:
    def __init__(self, plan: Plan, options: RuntimeOptions | None = None, env_name: str = "local"):
        self.plan = plan
        self.options = options or RuntimeOptions()
        self.env_name = env_name
        self.process_mode = plan.transport == "sage_queue"
        self.state = "created"
        self._queues: dict = {}
        self._events: queue.Queue = queue.Queue()
        self._stop_event = FORK.Event() if self.process_mode else threading.Event()
        slots = (len(plan.instances) + len(plan.services)) * FIELDS
        self._counters = FORK.RawArray("q", slots) if self.process_mode else [0] * slots
        self._operator_tasks: dict = {}
        self._service_tasks: dict = {}
        self._watcher = None
        self._failure: TaskFailure | None = None
        self._failure_seen = False
        self._done: set = set()
        self._torn_down = False
        self._destroyed: set = set()  # names of the queues teardown has destroyed
        self._requests: dict = {}
        self._responses: dict = {}
        self._started_at = self._ended_at = None
        self._lock = threading.RLock()

    # -- start ----------------------------------------------------------------------

    def _queue(self, name: str, capacity_bytes: int, maxsize: int = 0):
        # No default timeouts: a task loop's get blocks until there is something and a
        # router's put is backpressure; SAGE_QUEUE_GET/PUT_TIMEOUT are for users' own queues.
        waits = dict(put_timeout=None, get_timeout=None)
        if self.process_mode:
            made = create_queue("sage_queue", name=name, maxsize=maxsize,
                                capacity_bytes=capacity_bytes, **waits)
        else:
            made = create_queue("python_queue", maxsize=maxsize, **waits)
        self._queues[name] = made
        return made

    def shm_bytes_by_queue_kind(self) -> dict:
        """Shared memory the job's queues take: operator name (its instances' input rings),
        "services" (request and response rings) and "errors" -> bytes."""
        o, p = self.options, self.plan
        needed = collections.Counter()
        for i in p.instances:
            if i.input_queue:
                needed[i.node.name] += o.input_capacity_bytes(i.node.name)
        needed["services"] = (len(p.services) + len(p.response_queues)) * o.service_capacity_bytes
        needed["errors"] = _ERROR_QUEUE_BYTES
        return dict(needed)

    def shm_bytes_needed(self) -> int:
        return sum(self.shm_bytes_by_queue_kind().values())

    def _check_shm_room(self) -> None:
        by_kind = self.shm_bytes_by_queue_kind()
        needed = sum(by_kind.values())
        try:
            stat = os.statvfs(SHM_DIR)
        except OSError:
            return
        free = stat.f_bavail * stat.f_frsize
        if needed > free:
            parts = ", ".join(f"{kind} {size / 2**20:.1f}" for kind, size in by_kind.items() if size)
            raise OSError(errno.ENOSPC, (
                f"this pipeline needs {needed / 2**20:.1f} MiB of shared memory for its queues "
                f"({len(self.plan.instances)} instances; MiB by queue: {parts}) but {SHM_DIR} has "
                f"{free / 2**20:.1f} MiB free: in Docker give the container more, e.g. "
                f"`docker run --shm-size=512m`, or lower queue_capacity_bytes (or an operator's "
                f"operator_queue_capacity_bytes) in the config"))

    def _wire(self) -> dict:
        o, p = self.options, self.plan
        o.check_operators(p)
        if self.process_mode:
            self._check_shm_room()
        for spec in p.instances:
            if spec.input_queue:
                self._queue(spec.input_queue, o.input_capacity_bytes(spec.node.name), o.queue_maxsize)
        requests = {s.decl.name: self._queue(s.request_queue, o.service_capacity_bytes)
                    for s in p.services}
        responses = {slot: self._queue(name, o.service_capacity_bytes)
                     for slot, name in p.response_queues.items()}
        wirings = {}
        for spec in p.instances:
            wiring = _Wiring(self._queues.get(spec.input_queue), [], responses.get(spec.slot),
                             requests)
            for edge in p.out_edges(spec.node):
                if edge.transport == CHAINED:
                    continue  # its task hands the items on (a ChainLink), no queue
                targets = p.instances_of(edge.downstream)
                wiring.out_edges.append((edge.input_index, edge.routing,
                                         [self._queues[t.input_queue] for t in targets],
                                         targets[0].node.name, edge.tagged))
            wirings[spec.key] = wiring
        self._responses = responses
        self._requests = requests
        return wirings

    def _make_task(self, key: str, operator: str, instance: int, body, chained: tuple = ()):
        if self.process_mode:
            return ProcessTask(key, operator, instance, body, self._errors, chained)
        return ThreadTask(key, operator, instance, body, self._events)

    def start(self) -> Job:
        if self.state != "created":
            raise RuntimeError(f"a job starts once; this one is {self.state}")
        self.state = "running"
        live_jobs.add(self)
        unwind_on_sigterm()
        try:
            wirings = self._wire()
            if self.process_mode:
                self._errors = self._queue(f"{self.plan.job_id}.errors", _ERROR_QUEUE_BYTES)
            register_exit_hook()
            for spec in self.plan.services:
                ctx = TaskContext(spec.decl.name, 0, 1, self.env_name, None)
                service = ServiceTask(spec, self._requests[spec.decl.name], self._responses, ctx,
                                      crosses_processes=self.process_mode)
                body = self._service_body(service, spec)
                key = f"service:{spec.decl.name}"
                self._service_tasks[key] = self._make_task(key, key, 0, body)
            for spec in self.plan.task_instances:
                chained = [(m, wirings[m.key]) for m in self.plan.chain_of(spec)[1:]]
                task = BaseTask(spec, wirings[spec.key], self._stop_event, self._counters,
                                self.options.batch_size, self.env_name, chained)
                self._operator_tasks[spec.key] = self._make_task(
                    spec.key, spec.node.name, spec.index, task.run,
                    tuple(m.key for m, _ in chained))
            self._started_at = time.monotonic()
            every = list(self._service_tasks.values()) + list(self._operator_tasks.values())
            for task in every:
                task.start()
            if self.process_mode:  # started after the forks: no thread of ours is copied
                self._watcher = ProcessWatcher(every, self._errors, self._events)
                self._watcher.start()
        except BaseException:
            self._teardown(abort=True)
            self.state = "failed"
            raise
        return self

    def _service_body(self, service: ServiceTask, spec):
        def body():
            caller = ServiceCaller(spec.slot, self._responses[spec.slot], self._requests,
                                   owner=f"service:{spec.decl.name}")
            service.ctx._caller = caller
            try:
                service.run()
            finally:
                caller.close()
        return body

    # -- wait, stop, close ----------------------------------------------------------

    def _take_events(self, pending: dict, deadline: float | None) -> None:
        """Consume task ends until ``pending`` is empty; the first failure aborts the job."""
        while pending:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise TimeoutError(f"the job is still running: {', '.join(sorted(pending))}")
            if threading.current_thread() is threading.main_thread():
                # wake now and then: Python runs signal handlers (Ctrl-C, SIGTERM) only in
                # the main thread, and a signal the kernel gives to another thread of the
                # user's does not interrupt this wait
                timeout = _SIGNAL_CHECK if timeout is None else min(timeout, _SIGNAL_CHECK)
            try:
                key, failure = self._events.get(timeout=timeout)
            except queue.Empty:
                continue
            self._done.add(key)
            pending.pop(key, None)
            if failure is not None and self._failure is None:
                self._failure = failure
                failed = f"{failure.operator}[{failure.instance}]"  # a chained one, maybe
                slot = next((s.slot for s in self.plan.instances if s.key == failed), None)
                if slot is not None:
                    self._counters[slot * FIELDS + ERRORS] += 1
                self._teardown(abort=True)
                self.state = "failed"
                self._raise_failure()

    def _raise_failure(self):
        self._failure_seen = True
        raise JobFailedError(self._failure)

    def wait(self, timeout: float | None = None) -> JobSummary:
        """Block until every task has ended; the summary. JobFailedError if a task failed
        (the job is then torn down); TimeoutError if ``timeout`` passed first."""
        with self._lock:
            if self.state == "failed":
                self._raise_failure()
            if self.state in ("finished", "closed"):
                return self.summary()
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                pending = {k: t for k, t in self._operator_tasks.items() if k not in self._done}
                self._take_events(pending, deadline)
                for name, request_queue in self._requests.items():
                    if f"service:{name}" not in self._done:
                        request_queue.put(STOP_REQUEST)
                pending = {k: t for k, t in self._service_tasks.items() if k not in self._done}
                self._take_events(pending, deadline)
            except (KeyboardInterrupt, SystemExit):
                self._teardown(abort=True)
                self.state = "failed" if self._failure else "closed"
                raise
            self._ended_at = time.monotonic()
            self.state = "finished"
            self._teardown(abort=False)
            return self.summary()

    def stop(self, timeout: float | None = None) -> JobSummary:
        """End the sources; everything already produced still reaches the sinks."""
        self._stop_event.set()
        return self.wait(timeout)

    def close(self) -> None:
        """Stop (draining for up to options.stop_timeout s), then end whatever is left and
        free every queue. Idempotent; never raises the job's failure (wait/stop do)."""
        with self._lock:
            if self.state == "closed":
                return
            if self.state == "running":
                try:
                    self.stop(self.options.stop_timeout)
                except (JobFailedError, TimeoutError) as exc:
                    log.warning("sage job %s closed while %s", self.plan.job_id, exc)
            elif self.state == "failed" and not self._failure_seen:
                log.error("sage job %s had failed: %s", self.plan.job_id,
                          JobFailedError(self._failure))
            self._teardown(abort=True)
            self.state = "closed"

    def _teardown(self, abort: bool) -> None:
        """End every task (closing the queues wakes blocked ones), then destroy the queues.
        Each step may be run again: a teardown cut short (an exception from a step) is
        finished by the next call; it counts as done only at its end. In the main thread,
        Ctrl-C and SIGTERM wait for its end, then act."""
        if self._torn_down:
            return
        try:
            with _signals_deferred():
                self._end_tasks(abort)
                if self._ended_at is None and self._started_at is not None:
                    self._ended_at = time.monotonic()
                for name, q in list(self._queues.items()):
                    if name not in self._destroyed:
                        _quietly(q.destroy if hasattr(q, "destroy") else q.close)
                        self._destroyed.add(name)
                live_jobs.discard(self)
                self._torn_down = True
        finally:
            if self._torn_down:
                restore_sigterm()  # after the deferral gave SIGTERM its handler back

    def _end_tasks(self, abort: bool) -> None:
        tasks = list(self._operator_tasks.values()) + list(self._service_tasks.values())
        if abort:
            self._stop_event.set()
            for q in self._queues.values():
                _quietly(q.close)
        deadline = time.monotonic() + 2.0
        for task in tasks:
            task.join(max(0.0, deadline - time.monotonic()))
        for task in tasks:
            if task.is_alive():
                task.terminate()
                task.join(1.0)
                if task.is_alive():
                    log.warning("sage task %s did not end (stuck in its function)", task.key)
        if self._watcher is not None:
            self._watcher.join(2.0)
        elif self.process_mode:
            for task in tasks:
                task.reap()

    # -- observing ------------------------------------------------------------------

    def metrics(self) -> list:
        """Live counters of every operator instance (readable while the job runs)."""
        result = []
        for spec in self.plan.instances:
            base = spec.slot * FIELDS
            q = self._queues.get(spec.input_queue)
            depth = 0
            if q is not None and self.state == "running":
                try:
                    depth = q.qsize()
                except Exception:  # noqa: BLE001 - a queue being torn down has no depth
                    depth = 0
            result.append(InstanceMetrics(spec.node.name, spec.index, self._counters[base + IN],
                                          self._counters[base + OUT],
                                          self._counters[base + ERRORS], depth))
        return result

    def summary(self) -> JobSummary:
        operators: dict = {}
        for m, spec in zip(self.metrics(), self.plan.instances, strict=True):
            entry = operators.setdefault(m.operator, {
                "parallelism": spec.node.parallelism, "items_in": 0, "items_out": 0, "errors": 0})
            entry["items_in"] += m.items_in
            entry["items_out"] += m.items_out
            entry["errors"] += m.errors
        end = self._ended_at or time.monotonic()
        wall = (end - self._started_at) if self._started_at else 0.0
        return JobSummary(self.plan.job_id, wall, operators)

    @property
    def queue_names(self) -> list:
        """Names of the queues this job made (process mode: /dev/shm/sage_queue.<name>)."""
        return list(self._queues)

    @property
    def task_pids(self) -> dict:
        """Process mode: the pid of each operator instance ("operator[instance]") and
        service ("service:name"); chained instances share their chain's process."""
        tasks = {**self._operator_tasks, **self._service_tasks}
        pids = {key: task.process.pid for key, task in tasks.items() if hasattr(task, "process")}
        for spec in self.plan.instances:
            if spec.chain_head in pids:
                pids[spec.key] = pids[spec.chain_head]
        return pids
