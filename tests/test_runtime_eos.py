"""End of stream loses nothing: the failures SAGE's users reported, as regression tests.

End markers travel behind the data on the same queues, and every instance counts one per
upstream instance per input before it finishes, for any parallelism on either side of an
edge, for comap and join whose inputs end at different times, and for stop().
"""

import collections
import time

import pytest

from sage.core.api import LocalEnvironment
from sage.core.function import BaseJoinFunction, SinkFunction, SourceFunction, StopSignal

pytest_plugins = ["runtime_support"]  # fixtures: mode, collect, no_leftovers
pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(90)]


@pytest.mark.parametrize("source_p,map_p,sink_p", [(3, 1, 1), (3, 2, 1), (1, 3, 2), (2, 2, 3)])
def test_every_item_arrives_whatever_the_parallelism(mode, collect, source_p, map_p, sink_p):
    # SAGE: parallelism 3 upstream of a sink: 20 submitted, 14 completed, no error.
    out = collect()
    env = LocalEnvironment("p", mode=mode)
    (env.from_collection(list(range(3000)), parallelism=source_p)
        .map(lambda x: x * 2, parallelism=map_p)
        .sink(out, parallelism=sink_p))
    summary = env.submit(autostop=True)
    assert sorted(out.items()) == [x * 2 for x in range(3000)]
    assert summary.operators["sink"]["items_in"] == 3000


def test_twenty_items_through_three_instances_all_complete(mode, collect):
    out = collect()
    env = LocalEnvironment("twenty", mode=mode)
    env.from_collection(list(range(20))).map(lambda x: x, parallelism=3).sink(out)
    env.submit(autostop=True)
    assert sorted(out.items()) == list(range(20))


class Slow(SourceFunction):
    """Yields count items, pausing between them, then stops."""

    def __init__(self, tag, count, pause, **kwargs):
        super().__init__(**kwargs)
        self.tag, self.left, self.pause = tag, count, pause

    def execute(self):
        if self.left == 0:
            return StopSignal(self.tag)
        self.left -= 1
        time.sleep(self.pause)
        return (self.tag, self.left)


def test_comap_over_sources_of_different_lengths_and_speeds_gets_every_item(mode, collect):
    # SAGE: comap stopped early when one input ended before the other.
    out = collect()
    env = LocalEnvironment("comap-ends", mode=mode)
    short_fast = env.from_source(Slow, "a", 3, 0.0)
    long_slow = env.from_source(Slow, "b", 40, 0.005)
    empty = env.from_collection([])
    (short_fast.connect(long_slow).connect(empty)
        .comap([lambda x: ("0", x), lambda x: ("1", x), lambda x: ("2", x)], parallelism=2)
        .sink(out))
    env.submit(autostop=True)
    got = collections.Counter(tag for tag, _ in out.items())
    assert got == {"0": 3, "1": 40}


class PairUp(BaseJoinFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.left = {}
        self.right = collections.defaultdict(list)

    def execute(self, payload, key, tag):
        if tag == 0:
            self.left[key] = payload
            return [(payload, r) for r in self.right.pop(key, [])]
        if key in self.left:
            return [(self.left[key], payload)]
        self.right[key].append(payload)
        return []


def test_join_over_sources_ending_at_different_times_ends_with_every_pair(mode, collect):
    # SAGE: join hung when its inputs ended at different times.
    out = collect()
    env = LocalEnvironment("join-ends", mode=mode)
    left = env.from_source(Slow, "L", 10, 0.0).keyby(lambda x: x[1])
    right = env.from_source(Slow, "R", 10, 0.01, parallelism=2).keyby(lambda x: x[1], parallelism=2)
    left.connect(right).join(PairUp, parallelism=2).sink(out)
    env.submit(autostop=True)
    pairs = out.items()
    assert len(pairs) == 20  # each left item meets both right instances' item of its key
    assert all(a[1] == b[1] for a, b in pairs)


class SlowSink(SinkFunction):
    def __init__(self, target, pause, **kwargs):
        super().__init__(**kwargs)
        self.target, self.pause = target, pause

    def execute(self, data):
        time.sleep(self.pause)
        self.target(data)


def test_autostop_drains_everything_in_flight(mode, collect):
    # SAGE: autostop let the stop signal overtake data; the last items never reached the sink.
    out = collect()
    env = LocalEnvironment("drain", mode=mode)
    env.from_collection(range(300)).map(lambda x: x, parallelism=2).sink(SlowSink, out, 0.001)
    env.submit(autostop=True)
    assert sorted(out.items()) == list(range(300))


def test_stop_ends_sources_and_delivers_what_they_produced(mode, collect):
    out = collect()
    counter = iter(range(10**9))
    env = LocalEnvironment("stop", mode=mode)
    (env.from_source(lambda: next(counter), parallelism=2)
        .map(lambda x: x, parallelism=3)
        .sink(SlowSink, out, 0.0001, parallelism=2))
    env.submit()
    time.sleep(0.3)
    summary = env.stop()
    produced = summary.operators["source"]["items_out"]
    items = out.items()
    assert produced > 0 and len(items) == produced
    assert summary.operators["SlowSink"]["items_in"] == produced


def test_a_slow_sink_behind_a_fast_source_drops_nothing_and_queues_stay_bounded(mode, collect):
    # SAGE: a full queue made the router drop packets (put_nowait); ours blocks instead.
    out = collect()
    maxsize = 128
    env = LocalEnvironment("backpressure", mode=mode,  # unchained: a queue between each
                           config={"queue_maxsize": maxsize, "batch_size": 16, "chaining": False})
    env.from_collection(range(3000)).map(lambda x: x).sink(SlowSink, out, 0.0002)
    env.submit()
    deepest = 0
    while env.job.state == "running":
        deepest = max([deepest] + [m.queue_depth for m in env.metrics()])
        try:
            env.wait(timeout=0.02)
        except TimeoutError:
            continue
    env.close()
    assert 0 < deepest <= maxsize
    assert sorted(out.items()) == list(range(3000))


def test_an_operator_whose_inputs_never_see_data_still_ends(mode, collect):
    out = collect()
    env = LocalEnvironment("empty", mode=mode)
    env.from_collection([]).filter(lambda x: True, parallelism=3).sink(out, parallelism=2)
    summary = env.submit(autostop=True)
    assert out.items() == [] and summary.operators["sink"]["items_in"] == 0
