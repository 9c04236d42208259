"""The pipeline API in SAGE's shape: every operator kind, routing mode and parallelism, in
thread and process mode."""

import collections
import re
import time

import pytest

from sage.core.api import ConnectedStreams, DataStream, LocalEnvironment
from sage.core.function import (
    BaseFunction,
    BatchFunction,
    FilterFunction,
    FlatMapFunction,
    MapFunction,
    SinkFunction,
    SourceFunction,
    StopSignal,
)

from conftest import requires_native

pytest_plugins = ["runtime_support"]  # fixtures: mode, collect, no_leftovers
pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(60)]


def run(env) -> object:
    return env.submit(autostop=True)


def test_sage_module_paths_import_the_same_classes():
    from sage.core.api.connected_streams import ConnectedStreams as C
    from sage.core.api.datastream import DataStream as D
    from sage.core.api.local_environment import LocalEnvironment as L
    from sage.core.function.map_function import MapFunction as M
    from sage.core.function.source_function import StopSignal as S

    assert (C, D, L, M, S) == (ConnectedStreams, DataStream, LocalEnvironment, MapFunction,
                               StopSignal)


def test_base_function_takes_and_ignores_any_arguments():
    class Double(MapFunction):
        def execute(self, data):
            return data * 2

    f = Double(1, 2, key="x")
    assert f.execute(4) == 8 and f.ctx is None and f.name == "Double"


def test_map_filter_flatmap_sink_chain(mode, collect):
    out = collect()
    env = LocalEnvironment("chain", mode=mode)
    (env.from_collection(map(str, range(200)))
        .map(int)  # a class without execute() is a plain callable
        .map(lambda x: x + 1)
        .filter(lambda x: x % 2 == 0)
        .flatmap(lambda x: [x, -x])
        .sink(out))
    summary = run(env)
    expected = [y for x in range(1, 201) if x % 2 == 0 for y in (x, -x)]
    assert sorted(out.items()) == sorted(expected)
    assert summary.operators["collection"]["items_out"] == 200
    assert summary.operators["flatmap"]["items_out"] == len(expected)


class Tokenize(FlatMapFunction):
    def execute(self, data):
        for word in data.split():
            self.collect(word)


class Upper(MapFunction):
    def __init__(self, suffix, **kwargs):
        super().__init__(**kwargs)
        self.suffix = suffix

    def execute(self, data):
        return data.upper() + self.suffix


class LongWords(FilterFunction):
    def execute(self, data):
        return len(data) > 3


def test_function_classes_get_their_declared_arguments(mode, collect):
    out = collect()
    env = LocalEnvironment("classes", mode=mode)
    (env.from_collection(["the quick brown fox", "jumps over the lazy dog"])
        .flatmap(Tokenize)
        .filter(LongWords)
        .map(Upper, "!", parallelism=2)
        .sink(out))
    run(env)
    assert sorted(out.items()) == sorted(["QUICK!", "BROWN!", "JUMPS!", "OVER!", "LAZY!"])


class WhoAmI(MapFunction):
    def execute(self, data):
        return (self.name, self.ctx.name, self.ctx.parallel_index, self.ctx.parallelism, data)


@pytest.mark.parametrize("parallelism", [1, 3])
def test_each_instance_sees_its_context_and_round_robin_spreads_items(mode, collect, parallelism):
    out = collect()
    env = LocalEnvironment("ctx", mode=mode)
    env.from_collection(range(300)).map(WhoAmI, parallelism=parallelism, name="who").sink(out)
    run(env)
    items = out.items()
    assert sorted(i[4] for i in items) == list(range(300))
    assert {(i[0], i[1], i[3]) for i in items} == {("who", "who", parallelism)}
    per_instance = collections.Counter(i[2] for i in items)
    assert sorted(per_instance) == list(range(parallelism))
    assert set(per_instance.values()) == {300 // parallelism}  # round robin: even shares


class Numbers(BatchFunction):
    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.left = count

    def execute(self):
        if self.left == 0:
            return None
        self.left -= 1
        return self.left


class CountTo(SourceFunction):
    def __init__(self, count, **kwargs):
        super().__init__(**kwargs)
        self.n = 0
        self.count = count

    def execute(self):
        self.n += 1
        if self.n > self.count:
            return StopSignal("done")
        return self.n if self.n % 5 else None  # None: nothing this call


def test_sources_batch_class_callable_iterable_and_source_function(mode, collect):
    a, b, c, d = collect(), collect(), collect(), collect()
    env = LocalEnvironment("sources", mode=mode)
    env.from_batch(Numbers, 50).sink(a)
    env.from_batch([1, 2, 3]).sink(b)
    env.from_source(CountTo, 20, delay=0.001).sink(c)
    counter = iter(range(5))
    env.from_batch(lambda: next(counter, None)).sink(d)
    run(env)
    assert sorted(a.items()) == list(range(50))
    assert sorted(b.items()) == [1, 2, 3]
    assert sorted(c.items()) == [n for n in range(1, 21) if n % 5]
    assert sorted(d.items()) == [0, 1, 2, 3, 4]


def test_a_source_with_parallelism_runs_one_function_per_instance(mode, collect):
    out = collect()
    env = LocalEnvironment("par-source", mode=mode)
    env.from_batch(Numbers, 10, parallelism=3).sink(out)
    env.from_collection(list(range(100)), parallelism=3).sink(out)
    run(env)
    items = out.items()
    assert sorted(items) == sorted(list(range(10)) * 3 + list(range(100)))


def test_one_stream_feeds_several_transformations_each_sees_every_item(mode, collect):
    evens, odds, everything = collect(), collect(), collect()
    env = LocalEnvironment("fanout", mode=mode)
    numbers = env.from_collection(range(100)).map(lambda x: x, parallelism=2)
    numbers.filter(lambda x: x % 2 == 0).sink(evens)
    numbers.filter(lambda x: x % 2 == 1).sink(odds)
    numbers.sink(everything)
    run(env)
    assert sorted(evens.items()) == list(range(0, 100, 2))
    assert sorted(odds.items()) == list(range(1, 100, 2))
    assert sorted(everything.items()) == list(range(100))


def test_print_prints_and_passes_items_on(mode, collect, capfd):
    out = collect()
    env = LocalEnvironment("print", mode=mode)
    env.from_collection(["alpha", "beta"]).print("Seen").map(str.upper).sink(out)
    run(env)
    printed = capfd.readouterr().out.splitlines()
    assert sorted(printed) == ["Seen: alpha", "Seen: beta"]
    assert sorted(out.items()) == ["ALPHA", "BETA"]


class Collect(SinkFunction):
    def __init__(self, target, **kwargs):
        super().__init__(**kwargs)
        self.target = target

    def execute(self, data):
        self.target((self.name, data))


def test_sink_class_with_name_and_arguments(mode, collect):
    out = collect()
    env = LocalEnvironment("sinkcls", mode=mode)
    env.from_collection([1, 2]).sink(Collect, out, name="FinalSink", parallelism=2)
    run(env)
    assert sorted(out.items()) == [("FinalSink", 1), ("FinalSink", 2)]


def test_thread_mode_lambdas_update_driver_state():
    counts = collections.Counter()
    env = LocalEnvironment("driver-state")
    env.from_collection("abcab").map(lambda c: counts.update(c)).sink(lambda x: None)
    run(env)
    assert counts == {"a": 2, "b": 2, "c": 1}


def test_metrics_are_readable_while_the_job_runs(mode):
    env = LocalEnvironment("metrics", mode=mode)
    env.from_source(lambda: 1, delay=0.001).map(lambda x: x, name="identity").sink(lambda x: None)
    job = env.submit()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = {x.operator: x for x in env.metrics()}
            if m["identity"].items_in > 20:
                break
            time.sleep(0.02)
        assert m["identity"].items_in > 20 and m["identity"].errors == 0
        assert job.state == "running"
    finally:
        summary = env.stop()
    assert summary.operators["sink"]["items_in"] == summary.operators["source"]["items_out"]


def test_context_manager_closes_and_close_is_idempotent(mode):
    with LocalEnvironment("ctxmgr", mode=mode) as env:
        env.from_source(lambda: 1).sink(lambda x: None)
        env.submit()
    env.close()
    assert env.job.state == "closed"


def test_unknown_config_mode_and_bad_parallelism_are_errors():
    with pytest.raises(ValueError, match="queue_maxsize"):
        LocalEnvironment(config={"queue_size": 3})
    with pytest.raises(ValueError, match="mode"):
        LocalEnvironment(mode="cluster")
    with pytest.raises(ValueError, match="parallelism"):
        LocalEnvironment().from_collection([1]).map(str, parallelism=0)
    with pytest.raises(ValueError, match="strategy"):
        LocalEnvironment().from_collection([1]).keyby(str, strategy="random")
    with pytest.raises(TypeError, match="callable"):
        LocalEnvironment().from_collection([1]).map(42)


def test_process_mode_without_the_native_module_names_the_install_command(monkeypatch):
    import sage.core.api.local_environment as local_environment
    from sage.utils.install_hint import native_build_hint

    monkeypatch.setattr(local_environment, "is_sage_queue_available", lambda: False)
    with pytest.raises(Exception, match=re.escape(native_build_hint())):  # install.py from a checkout
        LocalEnvironment(mode="process")


def test_submitting_twice_while_running_is_refused():
    env = LocalEnvironment("twice")
    env.from_source(lambda: 1).sink(lambda x: None)
    env.submit()
    try:
        with pytest.raises(RuntimeError, match="running a job already"):
            env.submit()
    finally:
        env.close()


def test_base_function_outside_a_task_has_no_services():
    class F(BaseFunction):
        def execute(self, data):
            return data

    with pytest.raises(RuntimeError, match="inside a running task"):
        F().call_service["x"]


class CountAll(MapFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counts = collections.Counter()

    def execute(self, word):
        self.counts[word] += 1  # nothing passed on per item

    def finish(self):
        return sorted(self.counts.items())


def test_finish_emits_what_a_function_accumulated_before_its_end_of_stream(mode, collect):
    out = collect()
    env = LocalEnvironment("finish", mode=mode)
    words = ["a", "b", "a", "c", "a", "b"] * 50
    env.from_collection(words).keyby(lambda w: w).map(CountAll, parallelism=2).sink(out)
    env.submit(autostop=True)
    assert sorted(out.items()) == [("a", 150), ("b", 100), ("c", 50)]


def test_a_generator_function_is_a_batch_source(mode, collect):
    out = collect()

    def numbers(count, step=1):
        yield from range(0, count, step)

    env = LocalEnvironment("generator", mode=mode)
    env.from_batch(numbers, 10, step=2).sink(out)
    env.submit(autostop=True)
    assert sorted(out.items()) == [0, 2, 4, 6, 8]


def test_constructor_arguments_for_a_plain_callable_are_refused():
    stream = LocalEnvironment("args").from_collection([1])
    with pytest.raises(TypeError, match="plain callable"):
        stream.map(lambda x: x, 3)
    with pytest.raises(TypeError, match="plain callable"):
        stream.filter(bool, threshold=2)
    stream.map(Upper, "!")  # a function class takes them


def test_a_function_object_given_as_is_gets_one_copy_per_instance(mode, collect):
    out = collect()
    shared = WhoAmI()
    env = LocalEnvironment("object", mode=mode)
    env.from_collection(range(30)).map(shared, parallelism=3, name="who").sink(out)
    env.submit(autostop=True)
    assert {item[2] for item in out.items()} == {0, 1, 2}
    assert shared.ctx is None  # the declared object itself is left as it was


def test_the_plan_gives_each_edge_its_routing_transport_and_packet_format():
    from sage.runtime.plan import build_plan

    env = LocalEnvironment("plan")
    words = env.from_collection(["a b"], name="lines").flatmap(str.split, parallelism=2,
                                                               name="split")
    keyed = words.keyby(lambda w: w, parallelism=2, name="key")
    other = env.from_collection([("a", 1)], name="other").keyby(lambda p: p[0], name="key2")
    keyed.connect(other).join(lambda payload, key, tag: [key], name="join").sink(print, name="out")
    for mode, transport in (("thread", "python_queue"), ("process", "sage_queue")):
        plan = build_plan(env.pipeline, [], mode, "job-x")
        names = {n.id: n.name for n in plan.nodes}
        edges = {(names[e.upstream], names[e.downstream]): (e.input_index, e.routing, e.tagged)
                 for e in plan.edges}
        assert edges == {("lines", "split"): (0, "round_robin", False),
                         ("split", "key"): (0, "round_robin", False),
                         ("key", "join"): (0, "hash", True),
                         ("key2", "join"): (1, "hash", True),
                         ("other", "key2"): (0, "round_robin", False),
                         ("join", "out"): (0, "round_robin", False)}
        chained = {("split", "key"), ("other", "key2"), ("join", "out")}  # one-to-one edges
        assert {(names[e.upstream], names[e.downstream]): e.transport for e in plan.edges} == {
            pair: "chained" if pair in chained else transport for pair in edges}
        join = [i for i in plan.instances if i.node.name == "join"]
        assert [i.ends_expected for i in join] == [3]  # key x2 + key2 x1
        assert "key -> join input 0: hash over " + transport + " (tagged)" in plan.describe()


@requires_native
def test_process_mode_functions_change_their_own_copy_of_driver_state():
    from runtime_support import Collector

    seen = []
    out = Collector("process")
    env = LocalEnvironment("copies", mode="process")
    env.from_collection([1, 2, 3]).map(lambda x: seen.append(x) or len(seen)).sink(out)
    try:
        env.submit(autostop=True)
        assert sorted(out.items()) == [1, 2, 3]  # the task's own list grew
        assert seen == []  # the driver's did not
    finally:
        out.close()


def test_a_dozen_instances_fit_dockers_default_dev_shm():
    from sage.runtime.job import Job
    from sage.runtime.plan import build_plan

    env = LocalEnvironment("dozen")
    env.register_service("svc", dict)
    (env.from_collection(range(10), parallelism=2).map(str, parallelism=3)
        .keyby(len, parallelism=2).map(str, parallelism=3).sink(print, parallelism=2))
    plan = build_plan(env.pipeline, env._services, "process", "job-dozen")
    assert len(plan.instances) == 12
    assert Job(plan).shm_bytes_needed() < 48 << 20  # room left under 64 MB for the rest


@requires_native
@pytest.mark.parametrize("mode", ["process"])
def test_an_operator_given_a_larger_ring_takes_items_the_default_ring_refuses(mode, collect):
    from sage.core.api import JobFailedError

    big = [bytes([i]) * (3 << 20) for i in range(3)]  # larger than the default 2 MiB ring

    def pipeline(config):
        out = collect()
        env = LocalEnvironment("big-items", mode=mode, config={"chaining": False, **config})
        # the sink sends on only a digest: the collector's own ring is smaller than an item
        env.from_collection(big).map(lambda b: b, name="relay").sink(lambda b: out((len(b), b[:1])), name="out")
        return env, out

    env, _ = pipeline({})
    with pytest.raises(JobFailedError, match=r"larger than the input ring.*operator_queue_capacity_bytes"):
        run(env)
    env, out = pipeline({"operator_queue_capacity_bytes": {"relay": 8 << 20, "out": 8 << 20}})
    run(env)
    assert sorted(out.items()) == [(3 << 20, bytes([i])) for i in range(3)]


def test_ring_sizes_per_operator_are_checked_and_counted():
    from sage.runtime.job import Job
    from sage.runtime.plan import build_plan

    with pytest.raises(ValueError, match=r"operator_queue_capacity_bytes\['relay'\] must be a whole number"):
        LocalEnvironment("bad", config={"operator_queue_capacity_bytes": {"relay": 100}})
    env = LocalEnvironment("sizes", config={"operator_queue_capacity_bytes": {"wide": 8 << 20, "nope": 8 << 20}})
    env.from_collection(range(3)).map(str, name="wide", parallelism=2).sink(print, name="out")
    plan = build_plan(env.pipeline, env._services, "process", "job-sizes")
    job = Job(plan, env.options)
    assert job.shm_bytes_by_queue_kind()["wide"] == 2 * (8 << 20)
    assert job.shm_bytes_by_queue_kind()["out"] == 2 << 20
    with pytest.raises(ValueError, match=r"\['nope'\], which this pipeline does not have; its operators: .*wide"):
        env.submit(autostop=True)


def test_a_ring_size_for_an_operator_without_queues_is_refused_with_the_fix():
    config = {"operator_queue_capacity_bytes": {"relay": 8 << 20, "src": 8 << 20}}
    env = LocalEnvironment("queueless", config=config)
    env.from_collection(range(3), name="src").map(str, name="relay").sink(print, name="out")
    with pytest.raises(ValueError, match=r"\['relay', 'src'\], which take no items from a queue .*"
                                         r"disable_chaining"):
        env.submit(autostop=True)
    assert env.job is None or env.job.state == "created"


class Count(MapFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def execute(self, x):
        self.seen.append(x)
        return len(self.seen)


def test_each_instance_of_a_function_object_has_its_own_state(mode, collect):
    out = collect()
    env = LocalEnvironment("own-state", mode=mode)
    env.from_collection(range(100)).map(Count(), parallelism=2).sink(out)
    env.submit(autostop=True)
    assert max(out.items()) == 50  # round robin: 50 items each, counted apart


class HoldsALock(MapFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        import threading

        self.lock = threading.Lock()

    def execute(self, x):
        return x


def test_a_function_object_that_cannot_be_copied_is_an_error_saying_pass_the_class(mode):
    from sage.core.api import JobFailedError

    env = LocalEnvironment("uncopyable", mode=mode)
    env.from_collection([1]).map(HoldsALock()).sink(lambda x: None)
    with pytest.raises((TypeError, JobFailedError), match="pass the class"):
        env.submit(autostop=True)


class _RefusingQueue:
    """put_many raises the given ValueError; put records what it gets."""

    def __init__(self, error: ValueError):
        self.error = error
        self.put_items: list = []

    def put_many(self, items):
        raise self.error

    def put(self, item):
        self.put_items.append(item)


def test_a_value_error_from_a_payload_is_raised_not_taken_for_a_batch_too_big():
    from sage.runtime.router.router import OutEdge

    refusing = _RefusingQueue(ValueError("from the payload's __reduce__"))
    edge = OutEdge(0, "round_robin", [refusing], batch_size=8)
    for item in range(3):
        edge.send(item)
    with pytest.raises(ValueError, match="__reduce__"):
        edge.flush()
    assert refusing.put_items == []  # not sent again one by one


def test_a_batch_larger_than_the_ring_goes_one_item_at_a_time():
    from sage.runtime.router.router import OutEdge

    refusing = _RefusingQueue(ValueError(
        "batch of 9000 bytes or more is larger than the ring of queue 'q' (4096 bytes)"))
    edge = OutEdge(0, "round_robin", [refusing], batch_size=8)
    for item in range(3):
        edge.send(item)
    edge.flush()
    assert refusing.put_items == [0, 1, 2]


class HugeFailure(MapFunction):
    def execute(self, x):
        raise ValueError("too much " + "x" * (2 << 20))


def test_a_failure_with_a_traceback_larger_than_the_error_ring_is_reported_cut(mode):
    from sage.core.api import JobFailedError

    env = LocalEnvironment("huge-failure", mode=mode)
    env.from_collection([1]).map(HugeFailure).sink(lambda x: None)
    with pytest.raises(JobFailedError) as info:
        run(env)
    assert (info.value.operator, info.value.exc_type) == ("HugeFailure", "ValueError")
    assert info.value.message.startswith("too much xxx")
    assert "raise ValueError" in info.value.traceback_text


@pytest.mark.parametrize("module, must_not_import", [
    ("sage.core.api.base_environment", "sage.runtime.operator"),  # the API names no operator
    ("sage.runtime.service.service_caller", "sage.runtime.task.local_task"),
])
def test_layers_import_only_what_they_need(module, must_not_import):
    import ast
    import importlib.util
    from pathlib import Path

    source = Path(importlib.util.find_spec(module).origin)  # the installed package's, wherever it is
    package = module.split(".")[:-1]
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            imported.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert must_not_import not in imported, sorted(imported)


def test_a_router_without_edges_counts_what_ended_there():
    from sage.runtime.router.router import Router

    router = Router([])
    for item in range(3):
        router.emit(item)
    assert router.emitted == router.ended_here == 3
