"""RayJob: a planned pipeline running on Ray; each task instance and each service an actor.

Start, in this order: create every actor (with the resources its operator was placed by),
ask each where it landed, choose each queue's transport from that (ray_placement.py), have
each reader create its queues on its node, then start the loops (the same BaseTask and
ServiceTask loops as on one machine, inside the actors: task/ray_task.py).

The job owns its actors: they are not detached, are named only inside the job's own
namespace, and close() (or any end: success, failure, a dead actor or node, Ctrl-C)
removes the queues, kills every actor and removes whatever the job named that is left,
and every sage_queue segment it made. The driver learns how each loop ended from its
run call's result (ray.wait on those); a dead actor's call fails at once, which fails the
job, naming the task and its node.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time

try:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError:  # RemoteEnvironment says how to install it; nothing else needs Ray
    ray = None

from sage.utils import is_sage_queue_available

from .driver_exit import live_jobs, register_exit_hook, restore_sigterm, unwind_on_sigterm
from .errors import JobFailedError, PlacementError, TaskFailure
from .job import InstanceMetrics, JobSummary, RuntimeOptions, _signals_deferred
from .plan import Plan
from .ray_connect import connect
from .ray_placement import (
    TRANSPORTS,
    Where,
    describe_job,
    edge_transports,
    links_of,
    plan_queues,
    service_key,
)
from .task.ray_task import RayTask, destroy_segments, shm_key

__all__ = ["RayJob", "RemoteOptions"]

log = logging.getLogger("sage.runtime")
_SIGNAL_CHECK = 0.5  # seconds: the longest the driver's wait() goes without running handlers
_CAUSE_GRACE = 3.0  # seconds a failure caused by another task's death waits for that death
_TEARDOWN_WAIT = 2.0  # seconds for loops to end after an abort, and for queues to go
_CONCURRENCY = 4  # the loop, plus metrics/stop/abort/release calls served meanwhile
# Raised inside a loop when a queue's actor is gone: the effect of another task's death
_EFFECTS = ("RayActorError", "ActorDiedError", "ActorUnavailableError")


@dataclasses.dataclass(frozen=True)
class RemoteOptions(RuntimeOptions):
    """RuntimeOptions plus Ray's: ``RemoteEnvironment(config={...})`` sets them by name."""

    transport: str = "auto"  #: "ray_queue": every queue on Ray, even inside one node
    #: packets per put_many of a task that writes to a ray_queue (one actor call each, which
    #: costs far more than a sage_queue put: measured across two loopback nodes, 64 -> 19k
    #: items/s, 256 -> 64k, 1024 -> 170k); at most half of queue_maxsize, so a put can land
    #: while the reader still holds a batch. The router still flushes whenever its task's
    #: input is momentarily empty, so light load keeps its latency.
    ray_batch_size: int = 512
    placement_timeout: float = 60.0  #: seconds for every actor to be placed and started

    def __post_init__(self):
        super().__post_init__()
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown transport {self.transport!r}; valid: {', '.join(TRANSPORTS)}")
        if self.ray_batch_size < 1:
            raise ValueError(f"ray_batch_size must be >= 1, got {self.ray_batch_size}")
        if self.placement_timeout <= 0:
            raise ValueError(f"placement_timeout must be > 0, got {self.placement_timeout}")


@dataclasses.dataclass
class _Task:
    """The driver's view of one actor."""

    key: str
    operator: str
    instance: int
    spec: object  # InstanceSpec or ServiceSpec
    actor: object = None
    where: Where | None = None
    run_ref: object = None

    @property
    def is_service(self) -> bool:
        return self.key.startswith("service:")


def _without_upstream_functions(node):
    """The node an actor needs: its inputs only as names and parallelism (their functions,
    perhaps large or unpicklable, belong to other actors)."""
    inputs = [dataclasses.replace(up, function=None, args=(), kwargs={}, inputs=[])
              for up in node.inputs]
    return dataclasses.replace(node, inputs=inputs)


def _actor_options(node_resources: dict) -> dict:
    resources = dict(node_resources)
    options = dict(num_cpus=resources.pop("num_cpus", 0))  # no CPU held unless asked
    for name in ("num_gpus", "memory"):
        if name in resources:
            options[name] = resources.pop(name)
    if resources:
        options["resources"] = resources
    return options


def _asked(task: _Task) -> dict:
    node = getattr(task.spec, "node", None)
    resources = node.resources if node is not None else task.spec.decl.resources
    return dict(resources) if resources else {"num_cpus": 0}


class RayJob:
    def __init__(self, plan: Plan, options: RemoteOptions | None = None, env_name: str = "remote"):
        self.plan = plan
        self.options = options or RemoteOptions()
        self.env_name = env_name
        self.namespace = plan.job_id  # nothing of another job is named in it
        self.address = ""
        self.state = "created"
        self.queues: dict = {}  # name -> QueueSpec, once placed
        self._tasks: dict = {}  # key -> _Task (services first, then instances)
        self._done: set = set()
        self._final: dict = {}  # key -> [in, out, errors] as its loop ended
        self._failure: TaskFailure | None = None
        self._failure_seen = False
        self._torn_down = False
        self._started_at = self._ended_at = None
        self._lock = threading.RLock()

    # -- start ----------------------------------------------------------------------

    def start(self) -> RayJob:
        if self.state != "created":
            raise RuntimeError(f"a job starts once; this one is {self.state}")
        self.address = connect()
        self.state = "running"
        live_jobs.add(self)
        unwind_on_sigterm()
        register_exit_hook()
        try:
            self._check_sendable()
            self._check_resources()
            self._create_actors()
            self._place()
            self.queues = plan_queues(self.plan, {k: t.where for k, t in self._tasks.items()},
                                      self.options, self.namespace)
            self._create_queues()
            self._started_at = time.monotonic()
            self._start_loops()
        except BaseException:
            self._teardown(abort=True)
            self.state = "failed"
            raise
        return self

    def _check_sendable(self) -> None:
        """Every function goes to its actors pickled (Ray's cloudpickle): one that cannot
        be is refused before anything starts, naming its operator."""
        import ray.cloudpickle

        declared = [(f"operator {n.name!r}", (n.function, n.args, n.kwargs)) for n in self.plan.nodes]
        declared += [(f"service {s.decl.name!r}", (s.decl.cls, s.decl.args, s.decl.kwargs))
                     for s in self.plan.services]
        for what, parts in declared:
            try:
                ray.cloudpickle.dumps(parts)
            except Exception as exc:  # noqa: BLE001 - whatever pickling raised, the fix is one
                raise TypeError(
                    f"{what}: its function cannot be sent to a Ray actor ({type(exc).__name__}: "
                    f"{exc}). On RemoteEnvironment a function, its arguments and what it "
                    "refers to must pickle with cloudpickle: pass a class with plain "
                    "arguments, and share state through a service, not driver objects") from exc

    def _check_resources(self) -> None:
        """A resource no node has would leave the actor pending for ever: say so now."""
        total = ray.cluster_resources()
        asked = [(f"operator {n.name!r}", n.resources) for n in self.plan.nodes]
        asked += [(f"service {s.decl.name!r}", s.decl.resources) for s in self.plan.services]
        for what, resources in asked:
            for name, amount in resources.items():
                have = total.get({"num_cpus": "CPU", "num_gpus": "GPU"}.get(name, name), 0)
                if amount > have:
                    raise PlacementError(
                        f"{what} is placed with {name}={amount} per instance, "
                        f"but the whole cluster has {have:g}: start a node that has it (e.g. "
                        f"`ray start --resources='{{\"{name}\": {amount:g}}}'`) or change its "
                        f".place(...) (cluster resources: {dict(sorted(total.items()))})")

    def _create_actors(self) -> None:
        remote = ray.remote(RayTask)
        wanted = [(service_key(s.decl.name), service_key(s.decl.name), 0, s, s.decl.resources)
                  for s in self.plan.services]
        wanted += [(i.key, i.node.name, i.index, i, i.node.resources) for i in self.plan.instances]
        for key, operator, instance, spec, resources in wanted:
            task = _Task(key, operator, instance, spec)
            self._tasks[key] = task
            task.actor = remote.options(
                name=f"{self.plan.job_id}:{key}", namespace=self.namespace,
                max_concurrency=_CONCURRENCY, max_restarts=0, **_actor_options(resources),
            ).remote(key, operator, instance)

    def _place(self) -> None:
        refs = {task.actor.where.remote(): task for task in self._tasks.values()}
        ready, waiting = ray.wait(list(refs), num_returns=len(refs),
                                  timeout=self.options.placement_timeout)
        if waiting:
            names = ", ".join(f"{refs[r].key} (asks {_asked(refs[r])})" for r in waiting[:5])
            raise PlacementError(
                f"{len(waiting)} of {len(refs)} tasks were not placed in "
                f"{self.options.placement_timeout:g} s: {names}; free resources now: "
                f"{dict(sorted(ray.available_resources().items()))}. Lower the parallelism, "
                "add nodes, or raise config placement_timeout")
        for ref in ready:
            task = refs[ref]
            try:
                task.where = Where(**ray.get(ref))
            except ray.exceptions.RayError as exc:
                raise PlacementError(f"the actor of {task.key} did not start: {exc} (is sage "
                                     "installed on every node of the cluster?)") from exc

    def _create_queues(self) -> None:
        by_reader = collections.defaultdict(list)
        for spec in self.queues.values():
            by_reader[spec.reader].append(spec)
        ray.get([self._tasks[reader].actor.create_queues.remote(specs)
                 for reader, specs in by_reader.items()])

    def _start_loops(self) -> None:
        plan = self.plan
        for task in self._tasks.values():
            spec = task.spec
            if task.is_service:
                links = links_of(plan, self.queues, spec.request_queue, spec.slot, service=True)
                task.run_ref = task.actor.run_service.remote(spec, links, self.env_name)
                continue
            out_edges = []
            for edge in plan.out_edges(spec.node):
                targets = plan.instances_of(edge.downstream)
                out_edges.append((edge.input_index, edge.routing,
                                  [t.input_queue for t in targets], targets[0].node.name,
                                  edge.tagged))
            links = links_of(plan, self.queues, spec.input_queue, spec.slot,
                             [n for e in out_edges for n in e[2]])
            light = dataclasses.replace(spec, node=_without_upstream_functions(spec.node))
            task.run_ref = task.actor.run_operator.remote(
                light, out_edges, links, self._batch_size(out_edges), self.env_name)

    def _batch_size(self, out_edges: list) -> int:
        """A task that writes to a ray_queue batches more (RemoteOptions.ray_batch_size)."""
        o = self.options
        if any(self.queues[n].transport == "ray_queue" for e in out_edges for n in e[2]):
            return max(o.batch_size, min(o.ray_batch_size, o.queue_maxsize // 2))
        return o.batch_size

    # -- wait, stop, close ----------------------------------------------------------

    def _outcome(self, task: _Task, ref) -> TaskFailure | None:
        try:
            fields, counters = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            return self._died(task, exc)
        except ray.exceptions.RayError as exc:
            return TaskFailure(task.operator, task.instance, type(exc).__name__,
                               str(exc).strip().splitlines()[-1], str(exc))
        self._final[task.key] = list(counters)
        return TaskFailure(*fields) if fields else None

    def _died(self, task: _Task, exc) -> TaskFailure:
        w = task.where
        alive = {n["NodeID"]: n["Alive"] for n in ray.nodes()}
        if not alive.get(w.node_id, False):
            why = f"its node {w.node} ({w.ip}) left the cluster, and its actor (pid {w.pid}) with it"
        else:
            why = f"its Ray actor (pid {w.pid}, on node {w.node} at {w.ip}) died"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return TaskFailure(task.operator, task.instance, "ActorDied", f"{why}: {first}", str(exc))

    def _take(self, keys: list, deadline: float | None) -> None:
        """Block until the loops of ``keys`` have ended, watching every loop still running
        meanwhile (a service that dies while operators wait on its answers must fail the
        job, not leave them waiting); the first failure (its cause, if it is the effect of
        another task's death) fails the job."""
        pending = {t.run_ref: t for t in self._tasks.values() if t.key not in self._done}
        waiting_for = {k for k in keys if k not in self._done}
        while waiting_for:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                raise TimeoutError("the job is still running: " + ", ".join(sorted(waiting_for)))
            if threading.current_thread() is threading.main_thread():
                # wake now and then: Python runs signal handlers (Ctrl-C) in the main thread
                timeout = _SIGNAL_CHECK if timeout is None else min(timeout, _SIGNAL_CHECK)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
            for ref in ready:
                task = pending.pop(ref)
                self._done.add(task.key)
                waiting_for.discard(task.key)
                failure = self._outcome(task, ref)
                if failure is not None:
                    self._fail(failure, task, pending)

    def _fail(self, failure: TaskFailure, task: _Task, pending: dict) -> None:
        cause_deadline = time.monotonic() + _CAUSE_GRACE
        while failure.exc_type in _EFFECTS and pending:
            ready, _ = ray.wait(list(pending), num_returns=1,
                                timeout=max(0.0, cause_deadline - time.monotonic()))
            if not ready:
                break
            other = pending.pop(ready[0])
            self._done.add(other.key)
            found = self._outcome(other, ready[0])
            if found is not None and found.exc_type not in _EFFECTS:
                failure, task = found, other
        self._failure = failure
        counters = self._final.setdefault(task.key, [0, 0, 0])
        counters[2] += 1
        self._teardown(abort=True)
        self.state = "failed"
        self._raise_failure()

    def _raise_failure(self):
        self._failure_seen = True
        raise JobFailedError(self._failure)

    def wait(self, timeout: float | None = None) -> JobSummary:
        """Block until every task has ended; the summary. JobFailedError if a task failed
        or died (the job is then torn down); TimeoutError if ``timeout`` passed first."""
        with self._lock:
            if self.state == "failed":
                self._raise_failure()
            if self.state in ("finished", "closed"):
                return self.summary()
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                self._take([k for k, t in self._tasks.items() if not t.is_service], deadline)
                services = [t for t in self._tasks.values() if t.is_service]
                # a service whose actor died says so through its run call, taken next
                self._calls("stop_service", [t for t in services if t.key not in self._done],
                            _TEARDOWN_WAIT)
                self._take([t.key for t in services], deadline)
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
        if self.state == "running":
            sources = [t for t in self._tasks.values()
                       if not t.is_service and t.spec.node.is_source and t.key not in self._done]
            ray.wait([t.actor.stop_sources.remote() for t in sources],
                     num_returns=len(sources), timeout=_TEARDOWN_WAIT)
        return self.wait(timeout)

    def close(self) -> None:
        """Stop (draining for up to options.stop_timeout s), then end every actor and free
        every queue. Idempotent; never raises the job's failure (wait/stop do)."""
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
        """End the loops (abort closes every queue, which wakes them), remove the queues,
        kill every actor and whatever is left named in the job's namespace, then remove
        the segments no reader removed. Each step may run again; done only at its end."""
        if self._torn_down:
            return
        try:
            with _signals_deferred():
                if ray is not None and ray.is_initialized():
                    removed = self._end_actors(abort)
                    self._kill_named()
                    self._remove_segments(removed)
                if self._ended_at is None and self._started_at is not None:
                    self._ended_at = time.monotonic()
                live_jobs.discard(self)
                self._torn_down = True
        finally:
            if self._torn_down:
                restore_sigterm()

    def _calls(self, method: str, tasks: list, timeout: float) -> list:
        """Call ``method`` on every actor at once; the results that came in time."""
        refs = [getattr(t.actor, method).remote() for t in tasks]
        if not refs:
            return []
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        results = []
        for ref in ready:
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayError as exc:  # its actor is gone: nothing to do there
                log.debug("sage job %s teardown: %s", self.plan.job_id, exc)
        return results

    def _end_actors(self, abort: bool) -> set:
        tasks = [t for t in self._tasks.values() if t.actor is not None]
        if abort:
            self._calls("abort", tasks, _TEARDOWN_WAIT)
            running = [t.run_ref for t in tasks if t.run_ref is not None and t.key not in self._done]
            if running:
                ray.wait(running, num_returns=len(running), timeout=_TEARDOWN_WAIT)
        removed = set()
        for names in self._calls("release", tasks, _TEARDOWN_WAIT):
            removed.update(names)
        for task in tasks:
            try:
                ray.kill(task.actor, no_restart=True)
            except (ValueError, ray.exceptions.RayError) as exc:
                log.debug("sage job %s: kill %s: %s", self.plan.job_id, task.key, exc)
        return removed

    def _kill_named(self) -> None:
        """Whatever is still named in the job's namespace (a queue whose reader died before
        removing it, say) is the job's: it goes too."""
        for entry in ray.util.list_named_actors(all_namespaces=True):
            if entry["namespace"] != self.namespace:
                continue
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=self.namespace), no_restart=True)
            except (ValueError, ray.exceptions.RayError):
                pass  # it died meanwhile

    def _remove_segments(self, removed: set) -> None:
        """Segments whose reader did not remove them (killed, its node gone) are removed on
        their host: by the driver if it is the same host, else by a task on their node."""
        left = [s for s in self.queues.values()
                if s.transport == "sage_queue" and s.name not in removed]
        if not left:
            return
        mine = shm_key()
        here = [s for s in left if s.shm_key == mine]
        if here and is_sage_queue_available():
            destroy_segments(here)
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        by_node = collections.defaultdict(list)
        for spec in left:
            if spec not in here or not is_sage_queue_available():
                by_node[spec.node_id].append(spec)
        for node_id, specs in by_node.items():
            if node_id not in alive:
                log.warning("sage job %s: %d sage_queue segments stay on node %s, which left "
                            "the cluster: run `sage queue cleanup` on its host",
                            self.plan.job_id, len(specs), node_id[:8])
                continue
            remover = ray.remote(destroy_segments).options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
            try:
                ray.get(remover.remote(specs), timeout=10)
            except (ray.exceptions.RayError, TimeoutError) as exc:
                log.warning("sage job %s: segments on node %s: %s", self.plan.job_id,
                            node_id[:8], exc)

    # -- observing ------------------------------------------------------------------

    def metrics(self) -> list:
        """Live counters of every operator instance (asked of the actors while running)."""
        instances = [t for t in self._tasks.values() if not t.is_service]
        live = {}
        if self.state == "running":
            refs = {t.actor.metrics.remote(): t for t in instances if t.key not in self._done}
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=10) if refs else ([], [])
            for ref in ready:
                try:
                    live[refs[ref].key] = ray.get(ref)
                except ray.exceptions.RayError:
                    pass
        result = []
        for task in instances:
            if task.key in self._final:  # its loop ended: the counters it ended with
                (n_in, n_out, errors), depth = self._final[task.key], 0
            else:
                n_in, n_out, errors, depth = live.get(task.key, (0, 0, 0, 0))
            result.append(InstanceMetrics(task.operator, task.instance, n_in, n_out, errors, depth))
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

    def edges(self) -> list:
        """Each (edge, downstream instance): its transport and why (once placed)."""
        return edge_transports(self.plan, self.queues) if self.queues else []

    def describe(self) -> str:
        if not self.queues:
            return self.plan.describe()
        where = {k: t.where for k, t in self._tasks.items()}
        nodes = len({w.node_id for w in where.values()})
        header = (f"job {self.plan.job_id} on Ray at {self.address}, namespace "
                  f"{self.namespace}: {len(where)} actors on {nodes} node(s)")
        return describe_job(self.plan, where, self.queues, header)

    @property
    def actor_names(self) -> list:
        """(namespace, name) of each actor of the job."""
        return [(self.namespace, f"{self.plan.job_id}:{k}") for k in self._tasks]

    @property
    def queue_names(self) -> list:
        return list(self.queues)

    @property
    def task_pids(self) -> dict:
        """Each task's actor process ("operator[instance]", "service:name") and its node."""
        return {k: (t.where.pid, t.where.node_id) for k, t in self._tasks.items() if t.where}
