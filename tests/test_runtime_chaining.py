"""Chaining: one-to-one operators run in one task (no queue between them), each keeping
its own instances, counters and errors; everything else keeps its queue."""

import os
import signal
import time

import pytest

from sage.core.api import LocalEnvironment
from sage.core.function import BaseService, MapFunction, SinkFunction
from sage.runtime import JobFailedError
from sage.runtime.plan import CHAINED, build_plan

from conftest import requires_native

pytest_plugins = ["runtime_support"]  # fixtures: mode, collect, no_leftovers
pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(60)]


def chained_edges(env, mode="thread", chaining=True) -> set:
    plan = build_plan(env._nodes, env._services, mode, "plan-only", chaining=chaining)
    names = {n.id: n.name for n in plan.nodes}
    return {(names[e.upstream], names[e.downstream]) for e in plan.edges if e.transport == CHAINED}


def test_only_one_to_one_edges_are_chained():
    env = LocalEnvironment("which")
    src = env.from_collection(range(10), parallelism=2, name="src")
    a = src.map(lambda x: x, parallelism=2, name="a")  # equal parallelism, round robin
    keyed = a.keyby(lambda x: x, parallelism=2, name="key")  # still one-to-one into keyby
    b = keyed.map(lambda x: x, parallelism=2, name="b")  # hash routing at p=2: a queue
    c = b.map(lambda x: x, parallelism=1, name="c")  # 2 -> 1: a queue
    d = c.keyby(lambda x: x, name="key1").map(lambda x: x, name="d")  # hash, but p=1 -> p=1
    d.sink(print, name="fed1")
    d.sink(print, name="fed2")  # d feeds two operators: neither is chained to it
    other = env.from_collection(range(3), name="other")
    c.connect(other).map(lambda x: x, name="both")  # two inputs: never chained (and c now
    # feeds two operators, so key1 is not chained to it either)
    assert chained_edges(env) == {("src", "a"), ("a", "key"), ("key1", "d")}
    assert chained_edges(env, chaining=False) == set()
    assert chained_edges(env, mode="ray") == set()  # every instance is an actor of its own


def test_disable_chaining_gives_an_operator_tasks_of_its_own():
    env = LocalEnvironment("apart")
    env.from_collection(range(10), name="src").map(lambda x: x, name="heavy").disable_chaining() \
        .map(lambda x: x, name="light").sink(print, name="out")
    assert chained_edges(env) == {("light", "out")}


def test_describe_and_task_count_show_the_chains():
    env = LocalEnvironment("tasks")
    env.from_collection(range(10), name="src").map(lambda x: x, name="m").sink(lambda x: None, name="s")
    plan = build_plan(env._nodes, env._services, "thread", "plan-only")
    assert [i.key for i in plan.task_instances] == ["src[0]"]
    assert [i.key for i in plan.chain_of(plan.task_instances[0])] == ["src[0]", "m[0]", "s[0]"]
    assert "src -> m input 0: chained" in plan.describe()
    assert all(i.input_queue is None for i in plan.instances)  # no queue in the whole job


class Double(MapFunction):
    def execute(self, x):
        return 2 * x


class TotalAtTheEnd(MapFunction):
    """Emits nothing per item; its finish() emits the total, which must go down the chain."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.total = 0

    def execute(self, x):
        self.total += x

    def finish(self):
        return [("total", self.ctx.parallel_index, self.total)]


@pytest.mark.parametrize("chaining", [True, False])
def test_a_chained_pipeline_delivers_in_order_and_counts_each_operator(mode, collect, chaining):
    out = collect()
    env = LocalEnvironment("order", mode=mode, config={"chaining": chaining})
    (env.from_collection(range(600)).map(Double, name="map").filter(lambda x: x % 3)
        .flatmap(lambda x: [x] * 70)  # one item fans out past a batch of 64
        .sink(out))
    summary = env.submit(autostop=True)
    kept = [2 * x for x in range(600) if (2 * x) % 3]
    assert out.items() == [x for x in kept for _ in range(70)]  # one chain, one order
    ops = summary.operators
    assert (ops["map"]["items_in"], ops["map"]["items_out"]) == (600, 600)
    assert (ops["filter"]["items_in"], ops["filter"]["items_out"]) == (600, len(kept))
    assert (ops["flatmap"]["items_in"], ops["flatmap"]["items_out"]) == (len(kept), 70 * len(kept))
    assert ops["sink"]["items_in"] == 70 * len(kept)


def test_what_a_chained_operator_emits_at_its_end_reaches_the_sink(mode, collect):
    out = collect()
    env = LocalEnvironment("finish", mode=mode)
    env.from_collection(range(100), parallelism=2).map(TotalAtTheEnd, parallelism=2).sink(out, parallelism=2)
    env.submit(autostop=True)
    # from_collection's instance i takes items i, i+2, ...: the evens and the odds
    assert sorted(out.items()) == [("total", 0, sum(range(0, 100, 2))), ("total", 1, sum(range(1, 100, 2)))]


def test_live_metrics_list_every_chained_instance(mode):
    env = LocalEnvironment("metrics", mode=mode)
    env.from_source(lambda: 1, name="source").map(Double, name="map").sink(lambda x: None, name="sink")
    env.submit()
    try:
        deadline = time.monotonic() + 10
        while True:
            by_op = {m.operator: m for m in env.metrics()}
            if by_op["sink"].items_in > 1000:
                break
            assert time.monotonic() < deadline, f"the sink got nothing: {by_op}"
            time.sleep(0.01)
        assert set(by_op) == {"source", "map", "sink"} and by_op["map"].items_in > 1000
        assert all(m.queue_depth == 0 for m in by_op.values())  # none of them has a queue
    finally:
        env.stop()
        env.close()


class FailsAt(MapFunction):
    def __init__(self, at, **kwargs):
        super().__init__(**kwargs)
        self.at = at

    def execute(self, x):
        if x == self.at:
            raise ZeroDivisionError(f"bad item {x}")
        return x


class FailsAtTheEnd(SinkFunction):
    def execute(self, x):
        pass

    def finish(self):
        raise KeyError("no summary")


def test_an_error_in_a_chained_operator_names_that_operator_not_the_chain(mode):
    env = LocalEnvironment("fails", mode=mode)
    env.from_collection(range(1000), parallelism=2).map(Double, parallelism=2) \
        .map(FailsAt, 1998, parallelism=2, name="fragile").sink(lambda x: None, parallelism=2)
    with pytest.raises(JobFailedError) as info:
        env.submit(autostop=True)
    # 999 is odd: collection instance 1 takes it, and its chain (map[1], fragile[1]) doubles it
    assert (info.value.operator, info.value.exc_type) == ("fragile", "ZeroDivisionError")
    assert info.value.instance == 1 and "bad item 1998" in info.value.message
    assert env.job.summary().operators["fragile"]["errors"] == 1


class Identity(MapFunction):
    def execute(self, x):
        return x


def test_an_error_in_a_chained_finish_names_that_operator(mode):
    env = LocalEnvironment("fails-at-end", mode=mode)
    env.from_collection(range(10)).map(Identity).sink(FailsAtTheEnd, name="summary")
    with pytest.raises(JobFailedError) as info:
        env.submit(autostop=True)
    assert (info.value.operator, info.value.instance, info.value.exc_type) == ("summary", 0, "KeyError")


class Scale(BaseService):
    def __init__(self, factor):
        self.factor = factor

    def times(self, x):
        return self.factor * x


class CallsScale(MapFunction):
    def execute(self, x):
        return self.call_service["scale"].times(x, timeout=10)


def test_chained_operators_call_services(mode, collect):
    out = collect()
    env = LocalEnvironment("svc", mode=mode)
    env.register_service("scale", Scale, 3)
    env.from_collection(range(200)).map(CallsScale).map(CallsScale).sink(out)
    env.submit(autostop=True)
    assert sorted(out.items()) == [9 * x for x in range(200)]


@requires_native
def test_a_killed_chain_process_names_its_head_and_what_it_also_ran():
    env = LocalEnvironment("killed-chain", mode="process")
    env.from_source(lambda: 1, name="src").map(Identity, name="m").sink(lambda x: None, name="s")
    job = env.submit()
    try:
        while sum(m.items_in for m in env.metrics() if m.operator == "s") < 100:
            time.sleep(0.01)
        pids = job.task_pids
        assert pids["src[0]"] == pids["m[0]"] == pids["s[0]"]  # one process runs the chain
        os.kill(pids["m[0]"], signal.SIGKILL)
        with pytest.raises(JobFailedError) as info:
            env.wait(timeout=10)
        assert (info.value.operator, info.value.exc_type) == ("src", "SIGKILL")
        assert "it also ran m[0], s[0], chained" in info.value.message
    finally:
        env.close()


def test_a_keyby_heading_a_chain_counts_its_end_markers(mode, collect):
    # two sources into one keyby: the keyby heads a chain (keyby -> map -> sink, all x1)
    # and must still count both upstream end markers in its input
    out = collect()
    env = LocalEnvironment("keyby-head", mode=mode)
    env.from_collection(range(300), parallelism=2).keyby(lambda x: x % 3, name="key") \
        .map(Double, name="double").sink(out, name="out")
    assert chained_edges(env) == {("key", "double"), ("double", "out")}
    env.submit(autostop=True)
    assert sorted(out.items()) == [2 * x for x in range(300)]


def test_a_chained_generator_is_handed_on_a_batch_at_a_time_not_held_whole():
    # thread mode: the generator sees how far behind the sink is while it yields
    seen, lags = [], []

    def expand(n):
        for i in range(n):
            lags.append(i - len(seen))
            yield i

    env = LocalEnvironment("generator", config={"batch_size": 16})
    env.from_collection([5000]).flatmap(expand).map(lambda x: x).sink(seen.append)
    env.submit(autostop=True)
    assert seen == list(range(5000))
    assert max(lags) <= 16, f"the sink was up to {max(lags)} items behind the generator"


@requires_native
def test_an_item_its_queue_refuses_at_a_flush_names_the_chain_tail_that_made_it():
    # src -> maker run chained; maker's items (closures) cannot be pickled onto out's queues,
    # which happens when the source flushes, outside maker's own process()
    env = LocalEnvironment("unpicklable", mode="process")
    env.from_collection(range(3), name="src").map(lambda x: (lambda: x), name="maker") \
        .sink(lambda f: None, parallelism=2, name="out")
    with pytest.raises(JobFailedError) as info:
        env.submit(autostop=True)
    assert (info.value.operator, info.value.instance) == ("maker", 0), info.value
