"""RemoteEnvironment on a real two-node Ray cluster on loopback.

One cluster per session (ray.cluster_utils.Cluster): a head with the custom resource
"node_a" and one added node with "node_b", so operators can be placed on each. Edges
inside a node run on sage_queue where the native module is built (ray_queue on the
minimal profile), edges across nodes on ray_queue; the tests read that from the job's
description. After every job, nothing of it may remain: asked of Ray (named actors, the
actor table, placement groups), of the kernel (the actors' processes) and of /dev/shm.
"""

import os
import select
import signal
import time
import uuid

import pytest

from sage.core.api import JobFailedError, LocalEnvironment, RemoteEnvironment
from sage.core.function import BaseService, MapFunction, SinkFunction, SourceFunction
from sage.runtime.errors import PlacementError
from sage.runtime.plan import build_plan
from sage.runtime.ray_placement import Where, edge_transports, plan_queues
from sage.utils import create_queue

from conftest import native_available, ray_installed, requires_ray, segment_file

pytestmark = requires_ray

if ray_installed():
    import ray

INSIDE = "sage_queue" if native_available() else "ray_queue"  # an edge within one node
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def cluster():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # another module's local Ray: this session uses the cluster
        ray.shutdown()
    # RAY_AUTH_MODE is left as it is: a local Ray started earlier in this process set it
    # for the process, and a cluster started with another mode refuses its actors
    with pytest.MonkeyPatch.context() as mp:
        # the workers import this module's functions by name, as a deployment's would
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])))
        # a node that is gone counts as gone after ~1.5 s of missed health checks (Ray's
        # default is 15 s); only the cluster's own bookkeeping depends on it, not the jobs
        c = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 2, "resources": {"node_a": 64}, "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500,
                               "health_check_failure_threshold": 3}})
        c.add_node(num_cpus=2, resources={"node_b": 64})
        c.wait_for_nodes()
        ray.init(address=c.address, logging_level="WARNING")
        yield c  # the environment stays for nodes that tests add
        ray.shutdown()
        c.shutdown()


class Results:
    """Where sinks put what they collected: one list per sink instance, at its end."""

    def __init__(self):
        self.queue = create_queue("ray_queue", name=f"t-results-{uuid.uuid4().hex[:8]}",
                                  namespace="sage-tests")

    def take(self, parts: int, timeout: float = 10) -> list:
        got = []
        for _ in range(parts):
            got.extend(self.queue.get(timeout=timeout))
        return got

    def destroy(self):
        self.queue.destroy()


@pytest.fixture
def results(cluster):
    made = Results()
    yield made
    made.destroy()


class Collect(SinkFunction):
    def __init__(self, results, **kwargs):
        super().__init__(**kwargs)
        self.results = results
        self.items = []

    def execute(self, item):
        self.items.append(item)

    def finish(self):
        self.results.queue.put(self.items)  # one call at the end, not one per item


class Endless(SourceFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.n = 0

    def execute(self):
        self.n += 1
        return self.n


def test_each_queue_takes_its_transport_from_where_its_reader_and_writers_are():
    """The rule itself, without Ray: inside a node with the native module, sage_queue; a
    writer on another node or a node without it (the minimal profile), ray_queue."""
    from sage.runtime.ray_job import RemoteOptions

    env = LocalEnvironment("rule")  # only declares here
    src = env.from_collection(range(4), parallelism=2, name="src")
    src.map(abs, name="near").sink(print, name="far")
    plan = build_plan(env.pipeline, [], "ray", "rule")

    def at(node, native=True):
        return Where(node_id=node * 8, ip="127.0.0.1", pid=1, shm_key="k", sage_queue=native)

    where = {"src[0]": at("a"), "src[1]": at("a"), "near[0]": at("a"), "far[0]": at("b")}
    rows = edge_transports(plan, plan_queues(plan, where, RemoteOptions(), "ns"))
    assert [(r["downstream"], r["transport"]) for r in rows] == [
        ("near[0]", "sage_queue"), ("far[0]", "ray_queue")]
    assert "crosses nodes: near[0] on node aaaaaaaa -> far[0] on node bbbbbbbb" in rows[1]["reason"]
    where["src[1]"] = at("b")  # one writer away: the whole input queue of near[0] crosses
    rows = edge_transports(plan, plan_queues(plan, where, RemoteOptions(), "ns"))
    assert rows[0]["transport"] == "ray_queue" and "src[1] on node bbbbbbbb" in rows[0]["reason"]
    where = {k: at("a", native=False) for k in where}
    rows = edge_transports(plan, plan_queues(plan, where, RemoteOptions(), "ns"))
    assert {r["transport"] for r in rows} == {"ray_queue"}
    assert "no native sage_queue (minimal profile)" in rows[0]["reason"]


def _process_gone(pid: int, timeout: float) -> bool:
    """Block until process ``pid`` (of this host) has exited, at most ``timeout`` s."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def assert_job_left_nothing(job) -> None:
    _assert_nothing_of(job.namespace, [n for _, n in job.actor_names],
                       [pid for pid, _ in job.task_pids.values()], job.queue_names)


def _assert_nothing_of(namespace: str, actor_names: list, pids: list, queues: list) -> None:
    named = [a for a in ray.util.list_named_actors(all_namespaces=True)
             if a["namespace"] == namespace]
    assert named == [], f"named actors of the job are left: {named}"
    # ray.util.state needs the dashboard, which the test cluster does not start: the GCS's
    # actor table says the same (every actor of the job DEAD)
    from ray._private import state

    names = set(actor_names)
    alive = [(a.get("Name"), a["State"]) for a in state.actors().values()
             if a.get("Name") in names and a["State"] != "DEAD"]
    assert alive == [], f"actors of the job are not dead: {alive}"
    assert ray.util.placement_group_table() == {}, "a placement group is left"
    for pid in pids:
        assert _process_gone(pid, 10), f"an actor process (pid {pid}) is still running"
    left = [n for n in queues if native_available() and os.path.exists(segment_file(n))]  # none without it
    assert left == [], f"segments of the job are left: {left}"


def _transport(job, upstream: str, downstream: str) -> set:
    return {row["transport"] for row in job.edges()
            if row["upstream"] == upstream and row["downstream"].startswith(downstream + "[")}


@pytest.mark.skipif(not native_available(), reason="needs the native sage_queue")
def test_configured_timeouts_leave_a_remote_jobs_queues_blocking(clean_env):
    """SAGE_QUEUE_GET/PUT_TIMEOUT are for users' own queues: a task loop's get must wait for
    its input, not raise queue.Empty after the configured timeout."""
    import threading

    from sage.runtime.ray_job import RemoteOptions

    clean_env.setenv("SAGE_QUEUE_GET_TIMEOUT", "0.05")
    env = LocalEnvironment("waits")  # only declares here
    env.from_collection(range(2), name="src").sink(print, name="out")
    plan = build_plan(env.pipeline, [], "ray", "waits")
    where = {k: Where(node_id="a" * 8, ip="127.0.0.1", pid=1, shm_key="k", sage_queue=True)
             for k in ("src[0]", "out[0]")}
    spec = next(iter(plan_queues(plan, where, RemoteOptions(), "ns").values()))
    q = create_queue(spec.transport, **spec.create_options())
    try:
        threading.Timer(0.3, q.put, args=("late",)).start()
        assert q.get() == "late"  # waited past the configured 0.05 s
    finally:
        q.destroy()


def test_results_are_exact_and_each_edge_says_its_transport(cluster, results):
    env = RemoteEnvironment("two-nodes", config={"batch_size": 16, "queue_maxsize": 128})
    words = [f"w{i % 37}" for i in range(6000)]
    (env.from_collection(words, parallelism=2, name="src").place(node_a=1)
        .map(str.upper, parallelism=2, name="upper").place(node_b=1)
        .keyby(lambda w: w, parallelism=2, name="key").place(node_b=1)
        .sink(Collect, results, parallelism=2, name="sink").place(node_a=1))
    job = env.submit()
    summary = env.wait(timeout=60)
    env.close()
    parts = [results.queue.get(timeout=10) for _ in range(2)]
    assert sorted(parts[0] + parts[1]) == sorted(w.upper() for w in words)
    assert not set(parts[0]) & set(parts[1]), "a key reached both sink instances"
    assert summary.operators["sink"]["items_in"] == len(words)
    assert summary.operators["upper"]["items_out"] == len(words)
    assert _transport(job, "src", "upper") == {"ray_queue"}  # head -> node_b
    assert _transport(job, "upper", "key") == {INSIDE}
    assert _transport(job, "key", "sink") == {"ray_queue"}  # node_b -> head, by key
    text = env.describe()
    assert "crosses nodes" in text and "on 2 node(s)" in text
    if INSIDE == "sage_queue":
        assert "where the native sage_queue imports" in text
    assert_job_left_nothing(job)


def build_wordcount(env, results, pin: bool):
    """One SAGE-style pipeline, run unchanged on both environments."""
    class Count(MapFunction):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.counts = {}

        def execute(self, word):
            self.counts[word] = self.counts.get(word, 0) + 1

        def finish(self):
            return list(self.counts.items())

    lines = [" ".join(f"w{(i * k) % 11}" for k in range(5)) for i in range(800)]
    stream = env.from_collection(lines, name="lines").flatmap(str.split, parallelism=2,
                                                             name="split")
    if pin:
        stream.place(node_b=1)
    (stream.keyby(lambda w: w, parallelism=2, name="key").map(Count, parallelism=2, name="count")
        .sink(Collect, results, name="sink"))
    expected = {}
    for line in lines:
        for w in line.split():
            expected[w] = expected.get(w, 0) + 1
    return expected


def test_the_same_pipeline_runs_unchanged_on_local_and_remote(cluster, results):
    local = LocalEnvironment("local")
    expected = build_wordcount(local, results, pin=False)
    local.submit(autostop=True)
    assert dict(results.take(1)) == expected
    remote = RemoteEnvironment("remote")
    build_wordcount(remote, results, pin=True)
    remote.submit(autostop=True)
    assert dict(results.take(1)) == expected
    assert_job_left_nothing(remote.job)


def test_every_edge_on_ray_queue_when_asked(cluster, results):
    """What the minimal profile (no native module) runs: ray_queue inside a node too."""
    env = RemoteEnvironment("ray-only", config={"transport": "ray_queue"})
    (env.from_collection(range(3000), parallelism=2, name="src").place(node_b=1)
        .map(lambda x: x * 3, name="triple").place(node_b=1)
        .sink(Collect, results, name="sink").place(node_b=1))
    env.submit(autostop=True)
    assert sorted(results.take(1)) == [x * 3 for x in range(3000)]
    assert {row["transport"] for row in env.job.edges()} == {"ray_queue"}
    assert "config transport='ray_queue'" in env.describe()
    assert_job_left_nothing(env.job)


class Gate(MapFunction):
    """Holds its first item until the test opens the gate (a queue it blocks on)."""

    def __init__(self, gate, **kwargs):
        super().__init__(**kwargs)
        self.gate, self.opened = gate, False

    def execute(self, x):
        if not self.opened:
            self.gate.get(timeout=60)
            self.opened = True
        return x


def test_a_blocked_consumer_holds_its_producers_back_and_nothing_is_dropped(cluster, results):
    gate = create_queue("ray_queue", name=f"t-gate-{uuid.uuid4().hex[:8]}", namespace="sage-tests")
    try:
        env = RemoteEnvironment("backpressure", config={"batch_size": 8, "queue_maxsize": 32})
        n = 5000
        (env.from_collection(range(n), name="src").place(node_a=1)
            .map(Gate, gate, name="gate").place(node_b=1)
            .sink(Collect, results, name="sink").place(node_b=1))
        job = env.submit()
        with pytest.raises(TimeoutError):
            job.wait(timeout=2)  # it cannot end: the gate holds its first item
        produced = {m.operator: m.items_out for m in job.metrics()}["src"]
        # the source ran only as far as the gate let it: the gate's queue (32), what the
        # gate's loop took in one read (4 batches) and the batch the source is filling; a
        # batch into a ray_queue is up to half the queue (16)
        assert 32 <= produced <= 32 + 4 * 16 + 16, produced
        gate.put("open")
        env.wait(timeout=60)
        assert sorted(results.take(1)) == list(range(n))
        assert_job_left_nothing(job)
    finally:
        gate.destroy()


class Model(BaseService):
    def __init__(self, factor):
        self.factor = factor

    def scale(self, x):
        return x * self.factor

    def fail(self, x):
        raise ValueError(f"no answer for {x}")

    def slow(self, seconds):
        time.sleep(seconds)  # a service busy for that long
        return seconds


class Front(BaseService):
    """A service that calls another (on another node)."""

    def scale_twice(self, x):
        return self.call_service["model"].scale(self.call_service["model"].scale(x))


class UsesModel(MapFunction):
    def execute(self, x):
        sync = self.call_service["model"].scale(x, timeout=10)
        future = self.call_service_async["model"].scale(x + 1, timeout=10)
        out = [sync, future.result()]
        if x == 1:
            out.append(self.call_service["front"].scale_twice(x, timeout=10))
        if x == 0:
            try:
                self.call_service["model"].fail(x, timeout=10)
            except ValueError as exc:
                out.append(f"raised: {exc}")
            try:
                self.call_service["model"].slow(1.0, timeout=0.2)
            except TimeoutError:
                out.append("timed out")
        return tuple(out)


def test_services_answer_sync_and_async_from_another_node(cluster, results):
    env = RemoteEnvironment("services")
    env.register_service("model", Model, 10)
    env.place_service("model", node_a=1)
    env.register_service("front", Front)
    env.place_service("front", node_b=1)
    (env.from_collection(range(50), name="src").place(node_a=1)
        .map(UsesModel, parallelism=2, name="use").place(node_b=1)
        .sink(Collect, results, name="sink").place(node_a=1))
    env.submit(autostop=True)
    got = sorted(results.take(1))
    assert got[0] == (0, 10, "raised: no answer for 0", "timed out")
    assert got[1] == (10, 20, 100)  # through front, which called model twice
    assert got[2:] == [(x * 10, (x + 1) * 10) for x in range(2, 50)]
    assert "requests of service:model: ray_queue" in env.describe()
    assert_job_left_nothing(env.job)


def _fails_at(x):
    if x == 700:
        raise KeyError(f"bad item {x}")
    return x


def test_an_exception_fails_the_job_with_its_traceback_and_a_second_job_is_isolated(
        cluster, results):
    survivor = RemoteEnvironment("survivor", config={"stop_timeout": 30})
    survivor.from_source(Endless, delay=0.001, name="endless").place(node_a=1).sink(Collect, results,
                                                                        name="sink")
    survivor.submit()
    env = RemoteEnvironment("fails")
    (env.from_collection(range(5000), name="src").place(node_a=1)
        .map(_fails_at, parallelism=2, name="check").place(node_b=1)
        .sink(lambda x: None, name="drop"))
    started = time.monotonic()
    with pytest.raises(JobFailedError, match=r"'check' instance \d failed: KeyError") as info:
        env.submit(autostop=True)
    assert time.monotonic() - started < 20
    assert "_fails_at" in info.value.traceback_text and "bad item 700" in str(info.value)
    assert_job_left_nothing(env.job)
    # the other job never noticed: it runs on, then stops with everything delivered
    summary = survivor.stop(timeout=30)
    got = results.take(1)
    assert got == list(range(1, len(got) + 1)) and len(got) == summary.operators["sink"]["items_in"]
    assert_job_left_nothing(survivor.job)


def test_a_killed_actor_fails_the_job_within_seconds_naming_it(cluster, results):
    env = RemoteEnvironment("killed")
    (env.from_source(Endless, name="endless").place(node_a=1)
        .map(lambda x: x, parallelism=2, name="relay").place(node_b=1)
        .sink(lambda x: None, name="drop").place(node_b=1))
    job = env.submit()
    pid, _ = job.task_pids["relay[1]"]
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(JobFailedError, match=r"'relay' instance 1 failed: ActorDied: .*pid") as info:
        env.wait(timeout=30)
    assert time.monotonic() - started < 8, info.value
    env.close()
    assert_job_left_nothing(job)


def test_a_removed_node_fails_the_job_within_seconds_naming_it(cluster, results):
    node = cluster.add_node(num_cpus=1, resources={"node_c": 8})
    cluster.wait_for_nodes()
    env = RemoteEnvironment("node-gone")
    (env.from_source(Endless, name="endless").place(node_a=1)
        .map(lambda x: x + 1, name="far").place(node_c=1)
        .map(lambda x: x - 1, name="near").place(node_c=1)
        .sink(lambda x: None, name="drop").place(node_a=1))
    job = env.submit()
    assert _transport(job, "far", "near") == {INSIDE}  # a segment on the node that goes
    with pytest.raises(TimeoutError):
        job.wait(timeout=1)  # items flow
    _, node_id = job.task_pids["far[0]"]
    cluster.remove_node(node, allow_graceful=False)
    started = time.monotonic()
    with pytest.raises(JobFailedError, match=r"'(far|near)' instance 0 failed: ActorDied") as info:
        env.wait(timeout=30)
    assert time.monotonic() - started < 10, info.value
    assert node_id[:8] in str(info.value)
    env.close()
    assert_job_left_nothing(job)
    cluster.wait_for_nodes()  # until Ray counts the node as gone, it may still place work there


def test_resources_no_node_has_are_refused_at_once(cluster):
    env = RemoteEnvironment("nowhere")
    env.from_collection([1]).place(gpu_box=1).sink(lambda x: None)
    with pytest.raises(PlacementError, match=r"gpu_box=1 per instance.*ray start --resources"):
        env.submit()
    assert env.job is None or env.job.state == "failed"


def test_the_demo_runs_on_ray_with_its_progress_and_checked_counts(cluster):
    import io

    from sage.runtime.demo import run_demo

    out = io.StringIO()
    assert run_demo(3000, "remote", out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert f"on Ray at {cluster.address}" in text
    assert "check: the counts match a one-process count" in text


def test_a_function_that_cannot_be_sent_to_an_actor_is_refused_naming_it(cluster):
    import threading

    lock = threading.Lock()
    env = RemoteEnvironment("unpicklable")
    env.from_collection([1]).map(lambda x: (lock, x)[1], name="locked").sink(lambda x: None)
    with pytest.raises(TypeError, match=r"operator 'locked': its function cannot be sent to a "
                                        r"Ray actor \(TypeError: cannot pickle '_thread.lock'"):
        env.submit()


DRIVER = """
import json
from sage.core.api import RemoteEnvironment
from sage.core.function import SourceFunction

class Endless(SourceFunction):
    def execute(self):
        return 1

env = RemoteEnvironment("driver")  # the cluster named by SAGE_QUEUE_RAY_ADDRESS
env.from_source(Endless).place(node_b=1).map(lambda x: x).sink(lambda x: None).place(node_b=1)
job = env.submit()
print("READY", json.dumps([job.namespace, [n for _, n in job.actor_names],
                           [p for p, _ in job.task_pids.values()], job.queue_names]), flush=True)
env.wait()
"""


def test_sigterm_on_the_driver_ends_its_job_with_nothing_left(cluster):
    import json
    import subprocess
    import sys

    from conftest import child_env

    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env=child_env(SAGE_QUEUE_RAY_ADDRESS=cluster.address))
    try:
        line = driver.stdout.readline()
        assert line.startswith("READY"), line + driver.stderr.read()
        namespace, names, pids, queues = json.loads(line.split(" ", 1)[1])
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=15) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    _assert_nothing_of(namespace, names, pids, queues)


def test_another_address_than_the_cluster_this_process_is_on_is_refused(cluster):
    env = RemoteEnvironment("elsewhere", address="127.0.0.1:1")
    env.from_collection([1]).sink(lambda x: None)
    with pytest.raises(RuntimeError, match=f"connected to the Ray cluster at {cluster.address} "
                                           "already, so it cannot join 127.0.0.1:1"):
        env.submit()


class Waits(MapFunction):
    def execute(self, x):
        return self.call_service["model"].slow(60)  # no timeout: only the job's end frees it


def test_a_killed_service_fails_the_job_while_its_callers_wait_on_it(cluster):
    env = RemoteEnvironment("service-killed")
    env.register_service("model", Model, 1)
    env.from_collection([1, 2]).map(Waits, name="caller").place(node_b=1).sink(lambda x: None)
    job = env.submit()
    with pytest.raises(TimeoutError):
        job.wait(timeout=1)  # the caller is waiting on the service
    pid, _ = job.task_pids["service:model"]
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(JobFailedError, match=r"'service:model' instance 0 failed: ActorDied"):
        env.wait(timeout=30)
    assert time.monotonic() - started < 8
    env.close()
    assert_job_left_nothing(job)


def test_an_address_where_no_cluster_answers_fails_in_seconds_saying_so():
    from sage.runtime.ray_connect import _join

    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"no Ray cluster answers at 127.0.0.1:1 .*ray start"):
        _join("127.0.0.1:1")  # Ray's own retries would take minutes
    assert time.monotonic() - started < 6


def test_connected_streams_from_both_nodes_end_with_every_item(cluster, results):
    env = RemoteEnvironment("comap")
    left = env.from_collection(range(500), name="left").place(node_a=1)
    right = env.from_collection(range(2000), parallelism=2, name="right").place(node_b=1)
    (left.connect(right).comap([lambda x: ("L", x), lambda x: ("R", x)], parallelism=2,
                               name="tag").place(node_b=1)
        .sink(Collect, results, name="sink").place(node_a=1))
    env.submit(autostop=True)
    got = results.take(1)
    assert sorted(got) == sorted([("L", x) for x in range(500)] + [("R", x) for x in range(2000)])
    assert _transport(env.job, "left", "tag") == {"ray_queue"}  # one writer away is enough
    assert_job_left_nothing(env.job)
