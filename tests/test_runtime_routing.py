"""Routing in the pipeline API: keyby by hash (stable across processes and hash seeds),
broadcast and round robin, connected streams, comap and join, in thread and process mode."""

import collections
import subprocess
import sys

import pytest

from sage.core.api import LocalEnvironment
from sage.core.function import BaseCoMapFunction, BaseJoinFunction, KeyByFunction, MapFunction
from sage.runtime.router.packet import stable_hash

from conftest import child_env

pytest_plugins = ["runtime_support"]  # fixtures: mode, collect, no_leftovers
pytestmark = [pytest.mark.usefixtures("no_leftovers"), pytest.mark.timeout(60)]


def run(env) -> object:
    return env.submit(autostop=True)


class Word(KeyByFunction):
    def execute(self, data):
        return data


class Tag(MapFunction):
    def execute(self, data):
        return (self.ctx.parallel_index, data)


def test_keyby_hash_sends_each_key_to_one_stable_instance(mode, collect):
    out = collect()
    words = [f"w{i % 37}" for i in range(2000)]
    env = LocalEnvironment("hash", mode=mode)
    env.from_collection(words, parallelism=2).keyby(Word, parallelism=2).map(Tag, parallelism=3).sink(out)
    run(env)
    items = out.items()
    assert len(items) == 2000
    instances_of = collections.defaultdict(set)
    for instance, word in items:
        instances_of[word].add(instance)
    # the stable hash decides, the same in every process (process mode: 7 processes)
    assert all(seen == {stable_hash(w) % 3} for w, seen in instances_of.items())


def test_keyby_broadcast_and_round_robin(mode, collect):
    broadcast, spread = collect(), collect()
    env = LocalEnvironment("strategies", mode=mode)
    items = env.from_collection(range(60))
    items.keyby(lambda x: x, strategy="broadcast").map(Tag, parallelism=3).sink(broadcast)
    items.keyby(lambda x: 0, strategy="round_robin").map(Tag, parallelism=3).sink(spread)
    run(env)
    got = broadcast.items()
    assert len(got) == 180
    assert {i: sorted(x for j, x in got if j == i) for i in range(3)} == {i: list(range(60)) for i in range(3)}
    counts = collections.Counter(i for i, _ in spread.items())
    assert counts == {0: 20, 1: 20, 2: 20}  # all keys equal, yet spread evenly


def test_stable_hash_is_the_same_in_other_processes_and_hash_seeds():
    code = "from sage.runtime.router.packet import stable_hash; print(stable_hash('apple'), stable_hash(('k', 3)))"
    outs = {subprocess.run([sys.executable, "-c", code], env=child_env(PYTHONHASHSEED=seed),
                           capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert outs == {f"{stable_hash('apple')} {stable_hash(('k', 3))}\n"}


class SensorCoMap(BaseCoMapFunction):
    def map0(self, data):
        return ("temp", data)

    def map1(self, data):
        return ("humidity", data)


def test_connected_streams_map_sees_every_input(mode, collect):
    out = collect()
    env = LocalEnvironment("connected", mode=mode)
    a = env.from_collection(range(10))
    b = env.from_collection(range(100, 105))
    c = env.from_collection(["x"])
    a.connect(b).connect(c).map(lambda x: ("seen", x), parallelism=2).sink(out)
    run(env)
    assert sorted(map(str, out.items())) == sorted(
        str(("seen", x)) for x in [*range(10), *range(100, 105), "x"])


@pytest.mark.parametrize("style", ["class", "list", "args"])
def test_comap_maps_each_input_with_its_own_function(mode, collect, style):
    out = collect()
    env = LocalEnvironment("comap", mode=mode)
    temps = env.from_collection([20.5, 22.0])
    humidity = env.from_collection([40, 50, 60])
    connected = temps.connect(humidity)
    if style == "class":
        stream = connected.comap(SensorCoMap)
    elif style == "list":
        stream = connected.comap([lambda t: ("temp", t), lambda h: ("humidity", h)])
    else:
        stream = connected.comap(lambda t: ("temp", t), lambda h: ("humidity", h))
    stream.sink(out)
    run(env)
    assert sorted(out.items()) == sorted([("temp", 20.5), ("temp", 22.0), ("humidity", 40),
                                          ("humidity", 50), ("humidity", 60)])


def test_comap_over_five_inputs_and_too_many_inputs_is_refused(mode, collect):
    out = collect()
    env = LocalEnvironment("comap5", mode=mode)
    streams = [env.from_collection([i]) for i in range(6)]
    connected = streams[0]
    for s in streams[1:5]:
        connected = connected.connect(s)
    connected.comap([lambda x, i=i: (i, x) for i in range(5)]).sink(out)
    with pytest.raises(ValueError, match="at most 5"):
        connected.connect(streams[5])
    with pytest.raises(ValueError, match="5 functions"):
        connected.comap([lambda x: x] * 4)
    run(env)
    assert sorted(out.items()) == [(i, i) for i in range(5)]


class UserOrderJoin(BaseJoinFunction):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.users = {}
        self.orders = collections.defaultdict(list)

    def execute(self, payload, key, tag):
        if tag == 0:
            self.users[key] = payload["name"]
            return [(payload["name"], order) for order in self.orders.pop(key, [])]
        if key in self.users:
            return [(self.users[key], payload["order"])]
        self.orders[key].append(payload["order"])
        return []


def test_join_meets_items_of_one_key_in_one_instance(mode, collect):
    out = collect()
    env = LocalEnvironment("join", mode=mode)
    users = env.from_collection([{"id": i, "name": f"user{i}"} for i in range(20)])
    orders = env.from_collection([{"id": i % 20, "order": i} for i in range(100)], parallelism=2)
    (users.keyby(lambda u: u["id"])
        .connect(orders.keyby(lambda o: o["id"], parallelism=2))
        .join(UserOrderJoin, parallelism=3)
        .sink(out))
    run(env)
    assert sorted(out.items()) == sorted((f"user{i % 20}", i) for i in range(100))


def test_connected_keyby_then_join(mode, collect):
    out = collect()
    env = LocalEnvironment("cjoin", mode=mode)
    left = env.from_collection([("a", 1), ("b", 2)])
    right = env.from_collection([("a", 10), ("b", 20), ("c", 30)])
    (left.connect(right)
        .keyby(lambda x: x[0], lambda x: x[0])
        .join(lambda payload, key, tag: [(key, tag, payload[1])], parallelism=2)
        .sink(out))
    run(env)
    assert sorted(out.items()) == [("a", 0, 1), ("a", 1, 10), ("b", 0, 2), ("b", 1, 20), ("c", 1, 30)]


def test_join_needs_keyed_inputs():
    env = LocalEnvironment("badjoin")
    a, b = env.from_collection([1]), env.from_collection([2])
    with pytest.raises(ValueError, match="keyed"):
        a.connect(b).join(UserOrderJoin)


def test_stable_hash_is_the_same_for_equal_numbers_and_for_tuples_of_them():
    from decimal import Decimal
    from fractions import Fraction

    assert stable_hash(1) == stable_hash(1.0) == stable_hash(True) == stable_hash(Fraction(1))
    assert stable_hash(0) == stable_hash(-0.0) == stable_hash(False)
    assert stable_hash(0.5) == stable_hash(Fraction(1, 2)) == stable_hash(Decimal("0.5"))
    assert stable_hash((1, "a", (2, 3.0))) == stable_hash((1.0, "a", (2.0, 3)))
    assert stable_hash(frozenset({1, 2})) == stable_hash({2.0, 1.0})
    assert stable_hash(1) != stable_hash(2) and stable_hash(0.5) != stable_hash(0.25)


def test_stable_hash_of_sets_is_the_same_in_other_hash_seeds():
    key = "frozenset(f'word{i}' for i in range(40)), frozenset({('a', 1), ('b', 2.5)})"
    code = f"from sage.runtime.router.packet import stable_hash; print(stable_hash(({key})))"
    outs = {subprocess.run([sys.executable, "-c", code], env=child_env(PYTHONHASHSEED=seed),
                           capture_output=True, text=True, check=True).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1



def test_a_join_keyed_by_int_on_one_side_and_float_on_the_other_meets(mode, collect):
    out = collect()
    env = LocalEnvironment("join-numbers", mode=mode)
    users = env.from_collection([{"id": i, "name": f"user{i}"} for i in range(20)])
    orders = env.from_collection([{"id": float(i % 20), "order": i} for i in range(60)])
    (users.keyby(lambda u: u["id"])
        .connect(orders.keyby(lambda o: o["id"]))
        .join(UserOrderJoin, parallelism=3)
        .sink(out))
    run(env)
    assert sorted(out.items()) == sorted((f"user{i % 20}", i) for i in range(60))
