"""The item codec (bindings/item_codec.cpp): small plain items skip pickle.

What a consumer gets must be exactly what pickle would have given it: same types, same
values (float bit patterns included), same shared references. Where the codec cannot
promise that, the item goes through pickle. Decoding corrupt bytes raises
SegmentCorruptError, never crashes.
"""

import collections
import enum
import math
import multiprocessing
import pickle
import random
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_native

pytestmark = requires_native

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
ATOMS = st.none() | st.booleans() | INT64 | st.integers() | st.floats(allow_nan=True) | st.text() | st.binary()
KEYS = st.none() | st.booleans() | INT64 | st.floats(allow_nan=False) | st.text(max_size=40) | st.binary(max_size=8)
ITEMS = st.recursive(
    ATOMS,
    lambda inner: st.lists(inner, max_size=6) | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(KEYS, inner, max_size=6),
    max_leaves=40,
)


def native():
    from sage_ext.sage_queue.python import _native

    return _native


def same(a, b):
    """Equal, with equal types all the way down; floats compare by their bits."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return same(list(a), list(b)) and all(same(a[k], b[k]) for k in a)
    return a == b


def expected(item):
    """What a consumer must get: pickle's answer."""
    return pickle.loads(pickle.dumps(item, protocol=5))


@settings(max_examples=300, deadline=None)
@given(ITEMS)
def test_any_plain_item_arrives_as_pickle_would_deliver_it(item):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    with SageQueue(f"codec-{uuid.uuid4().hex[:12]}", capacity_bytes=1 << 20) as q:
        q.put(item)
        q.put_many([item, item])
        got = [q.get(timeout=1), *q.get_many(2, timeout=1)]
        q.destroy()
    for g in got:
        assert same(g, expected(item)), (item, g)


@given(ITEMS)
@settings(max_examples=300, deadline=None)
def test_the_codec_decodes_what_it_encodes_or_leaves_the_item_to_pickle(item):
    n = native()
    data = n._codec_encode(item)
    if data is not None:
        assert same(n._codec_decode(data), expected(item))


SMALL_DICT = {"id": 7, "ts": 1.5, "tag": "abc", "vals": [1, 2, 3], "ok": True, "none": None}


class Color(enum.IntEnum):
    RED = 1


class Text(str):
    pass


def test_small_plain_items_use_the_codec():
    n = native()
    for item in (SMALL_DICT, [1, 2.5, "x"], ("a", b"b"), {1: {2: [3]}}, None, -0.0, 2**63 - 1, "é€𝄞"):
        assert n._codec_encode(item) is not None, item


@pytest.mark.parametrize("item", [
    2**63, -(2**63) - 1,                        # beyond 64 bits
    "\ud800",                                   # a lone surrogate has no UTF-8
    Color.RED, Text("x"), collections.OrderedDict(a=1), collections.defaultdict(int),
    {1, 2}, frozenset(), bytearray(b"x"), complex(1, 2), 1.5j,
    [list(range(3))] * 2,                       # one list reached twice
    [[0] * 40 for _ in range(70)],              # more containers than the identity check covers
    "x" * 20000,                                # over the codec's size limit
    [[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]],      # deeper than 16 levels
], ids=lambda v: type(v).__name__)
def test_items_the_codec_cannot_reproduce_exactly_go_to_pickle_and_arrive_intact(make_queue, item):
    assert native()._codec_encode(item) is None
    q = make_queue()
    q.put(item)
    got = q.get(timeout=1)
    assert type(got) is type(item) and (got == item or got != got)


def test_shared_references_and_cycles_survive_as_pickle_keeps_them(make_queue):
    q = make_queue()
    inner = [1, 2]
    shared = {"a": inner, "b": inner}
    cyclic = [1]
    cyclic.append(cyclic)
    q.put_many([shared, cyclic])
    got_shared, got_cyclic = q.get_many(2, timeout=1)
    assert got_shared["a"] is got_shared["b"] == [1, 2]
    assert got_cyclic[1] is got_cyclic


def test_a_batch_of_hundreds_of_records_goes_through_the_codec_and_arrives_equal(make_queue):
    batch = [{"id": i, "value": i * 0.5, "tags": [i, str(i)]} for i in range(200)]  # 401 containers, 14 KB
    encoded = native()._codec_encode(batch)
    assert encoded is not None, "a batch of small records must not fall back to pickle"
    assert same(native()._codec_decode(encoded), batch)
    q = make_queue()
    q.put(batch)
    assert same(q.get(timeout=1), batch)


@pytest.mark.parametrize("first_seen", [3, 17, 500])  # found by a scan, and by the table past 16
def test_a_container_reached_twice_in_a_large_item_is_left_to_pickle_and_arrives_shared(make_queue, first_seen):
    records = [{"id": i} for i in range(600)]
    item = records + [records[first_seen]]
    assert native()._codec_encode(item) is None
    q = make_queue()
    q.put(item)
    got = q.get(timeout=1)
    assert got == item and got[-1] is got[first_seen]


def test_an_item_of_more_containers_than_the_codec_tracks_goes_to_pickle_and_arrives_equal(make_queue):
    item = [[i] for i in range(2000)]
    assert native()._codec_encode(item) is None
    q = make_queue()
    q.put(item)
    assert q.get(timeout=1) == item


def test_floats_keep_their_bits(make_queue):
    q = make_queue()
    values = [-0.0, math.inf, -math.inf, math.nan, 5e-324, struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]]
    q.put(values)
    got = q.get(timeout=1)
    assert [struct.pack("<d", v) for v in got] == [struct.pack("<d", v) for v in values]


def test_decoded_items_are_independent_objects(make_queue):
    q = make_queue()
    q.put_many([SMALL_DICT, SMALL_DICT])
    a, b = q.get_many(2, timeout=1)
    a["vals"].append(4)
    assert b == SMALL_DICT and a is not b and a["vals"] is not b["vals"]


def _child_put(name, item):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue(name)
    q.put(item)
    q.detach()


def test_codec_items_cross_processes(make_queue):
    q = make_queue()
    p = multiprocessing.get_context("spawn").Process(target=_child_put, args=(q.name, SMALL_DICT))
    p.start()
    assert q.get(timeout=30) == SMALL_DICT
    p.join(30)
    assert p.exitcode == 0


def test_corrupt_encodings_raise_segment_corrupt_error_never_crash():
    n = native()
    rng = random.Random(20261201)
    valid = [n._codec_encode(x) for x in (SMALL_DICT, [SMALL_DICT] * 1, ("a", 1, [b"xy", {"k": None}]))]
    cases = [b"", b"Z", b"s\xff\xff\xff\xff", b"l\x00\x00\x00\x10", b"s\x02\x00\x00\x00\xff\xfe",
             b"D\x01\x00\x00\x00l\x00\x00\x00\x00N",     # an unhashable key
             b"l\x01\x00\x00\x00" * 40 + b"N",           # nested too deep
             b"NN"]                                      # trailing bytes
    for data in valid:
        cases += [data[:k] for k in range(len(data))]   # every truncation
        for _ in range(300):
            b = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            cases.append(bytes(b))
    cases += [rng.randbytes(rng.randint(1, 64)) for _ in range(2000)]
    corrupt = 0
    for data in cases:
        try:
            n._codec_decode(data)
        except n.SegmentCorruptError:
            corrupt += 1
    assert corrupt > len(cases) // 2  # most mutations are caught, and none crashed or raised otherwise
