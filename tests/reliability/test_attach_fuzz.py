"""Attaching to corrupted segments: random and structured mutations of real segment files.

Each case is a real queue's segment file with mutations applied (bit flips, byte and word
writes on the header's fields and on record headers, scrambled regions, truncation,
extension), written as a new segment file (/dev/shm/sage_queue.<name>). A worker interpreter attaches to
each and runs a round of calls on it. Every call must either work or raise a Python
exception; the worker dying of a signal, or any case taking longer than CASE_TIMEOUT,
fails the test. Cases run in batches, one worker per batch, which reports each case as
one JSON line, so a crash or hang names the case that caused it.

Header offsets: read from the native module (_native.LAYOUT, via tests/segment_layout.py);
check_layout() still verifies them against info(), so a wrong table fails loudly instead
of fuzzing the wrong bytes.
"""

import json
import os
import random
import select
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from conftest import child_env, requires_native, scaled, segment_file, write_segment_file

pytestmark = [requires_native, pytest.mark.stress, pytest.mark.timeout(600)]

CASE_TIMEOUT = scaled(10.0)  # a corrupt segment must be refused within seconds (never-initialised: 2 s)

try:
    from segment_layout import LAYOUT, MAGIC, field, slot_field
except ImportError:  # no native build: every test here is skipped (requires_native)
    LAYOUT, MAGIC = None, b""


def _layout():
    """The fields, regions and record fields fuzzed, at the offsets the native module reports:
    struct Segment's fields name -> (offset, width), the slot table's end, the record
    header's fields, and regions name -> (start, end) of the header."""
    if LAYOUT is None:
        return {}, 0, {}, {}
    lay = LAYOUT
    mutex, c, j = field("segment.mutex"), field("segment.c"), field("segment.journal")
    saved, saved_slot = j + lay["journal.saved"], j + lay["journal.saved_slot"]
    fields = {name: (field(f"segment.{name}"), width) for name, width in (
        ("magic", 8), ("version", 4), ("header_bytes", 4), ("capacity", 8), ("maxsize", 8), ("ring_offset", 8),
        ("total_bytes", 8), ("persistent", 4), ("creator_pid", 4), ("ready", 4), ("closed", 4), ("unlinked", 4))}
    fields.update({f"mutex.{n}": (mutex + lay[f"mutex.{n}"], 4)
                   for n in ("lock", "count", "owner", "nusers", "kind", "spins")})
    fields["mutex.list_prev"] = (mutex + lay["mutex.list"], 8)
    fields["mutex.list_next"] = (mutex + lay["mutex.list"] + 8, 8)
    counters = ("head", "read", "tail", "items", "unfinished")
    fields.update({n: (c + lay[f"counters.{n}"], 8) for n in counters})
    fields.update({f"stats.{n}": (c + lay["counters.stats"] + lay[f"stats.{n}"], 8) for n in ("puts", "gets")})
    fields["journal.active"] = (j + lay["journal.active"], 4)
    fields["journal.slot_index"] = (j + lay["journal.slot_index"], 4)
    fields.update({f"journal.{n}": (saved + lay[f"counters.{n}"], 8) for n in counters})
    slot = (("pid", 4), ("flags", 4), ("start", 8), ("pidns", 8), ("outstanding", 8))
    fields.update({f"journal.slot_{n}": (saved_slot + lay[f"slot_copy.{n}"], w) for n, w in slot})
    fields.update({n: (lay[f"segment.{n}"], 4) for n in (
        "not_empty_seq", "not_empty_sleepers", "not_full_seq", "not_full_sleepers", "join_seq", "join_sleepers")})
    fields.update({f"slot0.{n}": (slot_field(0, n), w) for n, w in slot})
    fields["slot1.pid"] = (slot_field(1, "pid"), 4)
    fields["slot255.pid"] = (slot_field(255, "pid"), 4)
    slots_end = field("segment.slots") + lay["slot.count"] * lay["slot.size"]
    record = {"state": (lay["record.state"], 4), "tag": (lay["record.tag"], 1), "nparts": (lay["record.nparts"], 2),
              "holder_pid": (lay["record.holder"], 4), "holder_start": (lay["record.holder_start"], 4),
              "len": (lay["record.len"], 8), "stamp": (lay["record.stamp_ns"], 8)}
    regions = {
        "mutex": (mutex, c), "counters": (c, j), "journal": (j, j + lay["journal.size"]),
        "wait_words": (field("segment.not_empty_seq"), field("segment.slots")),
        "slots": (field("segment.slots"), slots_end),
        "all_after_validated_fields": (field("segment.unlinked") + 4, slots_end),
    }
    return fields, slots_end, record, regions


FIELDS, SLOTS_END, RECORD_FIELDS, REGIONS = _layout()
SLOTS_AT = field("segment.slots") if LAYOUT else 0  # the header's fields end where the slot table starts

WORKER = textwrap.dedent(
    """
    import json, queue, sys
    from sage_ext.sage_queue.python.sage_queue import SageQueue, QueueClosed

    EXPECTED = (OSError, ValueError, queue.Empty, queue.Full, QueueClosed)
    # A get unpickles a record's payload, and corrupt pickle bytes raise whatever pickle raises.
    DECODING = {"get", "get_many", "drain"}

    def calls(q):
        yield "qsize", q.qsize
        yield "stats", q.stats
        yield "get_many", lambda: q.get_many(8, block=False)
        yield "put", lambda: q.put_nowait(b"probe")
        yield "put_many", lambda: q.put_many([b"a" * 100, bytearray(3000), "text"], block=False)
        yield "get", q.get_nowait
        yield "task_done", q.task_done
        yield "join", lambda: q.join(timeout=0)
        yield "second_handle", lambda: SageQueue.open(q.name).detach()
        yield "close", q.close
        yield "drain", lambda: q.get_many(64, block=False)

    def classify(e, what):
        if isinstance(e, EXPECTED):
            return type(e).__name__
        if what in DECODING:
            return "unpickling " + type(e).__name__
        return "UNEXPECTED " + type(e).__name__ + ": " + str(e)[:300]

    def outcome(what, call):
        try:
            call()
            return "ok"
        except Exception as e:
            messages.setdefault(type(e).__name__, str(e)[:300])
            return classify(e, what)

    for i, name in enumerate(sys.argv[1:]):
        result, messages = {}, {}
        try:
            q = SageQueue.open(name)
        except Exception as e:
            messages[type(e).__name__] = str(e)[:300]
            result["open"] = classify(e, "open")
        else:
            result["open"] = "ok"
            for what, call in calls(q):
                result[what] = outcome(what, call)
            result["detach"] = outcome("detach", q.detach)
        print(json.dumps([i, result, messages]), flush=True)
    """
)


def sq():
    from sage_ext.sage_queue.python import sage_queue

    return sage_queue


# -- real segments to mutate -------------------------------------------------------------------

_templates = {}


def templates():
    """Bytes of real segments: an idle persistent one that wrapped many times, and one
    copied while attached (live slot, maxsize set). Each with the offsets of its records."""
    if _templates:
        return _templates
    q = sq().SageQueue(f"afz-t-{uuid.uuid4().hex[:12]}", capacity_bytes=16384, persistent=True)
    try:
        for i in range(300):
            q.put(b"%d" % i * (i % 40 + 1))
            q.get()
        q.put_many([b"x" * 100, bytearray(b"y" * 5000), "a str", b""])
        q.put(b"z" * 7000)  # wraps: a padding record, then this one
        q.get()
        wrapped_info = q.info()
        check_layout(q)
    finally:
        q.detach()
    with open(segment_file(q.name), "rb") as f:
        wrapped = bytearray(f.read())
    os.unlink(segment_file(q.name))

    q = sq().SageQueue(f"afz-t-{uuid.uuid4().hex[:12]}", capacity_bytes=4096, maxsize=8)
    try:
        q.put_many([b"first", "second", bytearray(b"third")])
        q.get()
        attached_info = q.info()
        with open(segment_file(q.name), "rb") as f:
            attached = bytearray(f.read())
    finally:
        q.destroy()
    # The last journaled section was the get's claim, in our slot (the first): check the
    # journal's and the slot table's offsets with it.
    found = tuple(struct.unpack_from("<i", attached, FIELDS[f][0])[0]
                  for f in ("slot0.pid", "journal.active", "journal.slot_index", "journal.slot_pid"))
    found += (u64(attached, FIELDS["journal.tail"][0]),)
    assert found == (os.getpid(), 0, 0, os.getpid(), attached_info["tail"]), (
        f"segment layout does not match _native.LAYOUT ({found})")
    for key, data, info in (("wrapped", wrapped, wrapped_info), ("attached", attached, attached_info)):
        _templates[key] = (data, record_offsets(data, info))
    return _templates


def u64(data, off):
    return struct.unpack_from("<Q", data, off)[0]


def check_layout(q):
    with open(segment_file(q.name), "rb") as f:
        data = f.read()
    info = q.info()
    found = tuple(u64(data, FIELDS[k][0]) for k in ("capacity", "head", "read", "tail", "items"))
    want = (info["capacity_bytes"], info["head"], info["read"], info["tail"], info["items"])
    assert data[:8] == MAGIC and found == want, "segment layout does not match _native.LAYOUT"


def record_offsets(data, info):
    """File offsets of the records between head and tail (padding included)."""
    ring, cap = u64(data, FIELDS["ring_offset"][0]), info["capacity_bytes"]
    offsets, off = [], info["head"]
    while off < info["tail"]:
        at = ring + off % cap
        offsets.append(at)
        size = LAYOUT["record.size"]  # also the records' alignment
        off += (size + u64(data, at + LAYOUT["record.len"]) + size - 1) // size * size
    assert offsets, "the template has no records"
    return offsets


# -- mutations ---------------------------------------------------------------------------------

def width_values(width):
    top = (1 << (8 * width)) - 1
    return st.one_of(
        st.sampled_from([v & top for v in (0, 1, 2, 3, 4, 5, 6, 7, 31, 32, 4064, 4096, 16352, 16384, 16416,
                                           1 << 31, 0x40000000, 0x80000000, (1 << 63), top, top - 31)]),
        st.integers(0, top),
    )


def offset_in(lo, hi):
    """Uniform-ish over [lo, hi): hypothesis favours small integers, which would pile on lo."""
    return st.integers(0, 2**32).map(lambda x: lo + (x * 0x9E3779B1 + 0x7F4A7C15) % (hi - lo))


# Flips and byte writes spare the validated fields (magic, version, sizes: offsets below 64),
# which the single-flip test covers exhaustively. Offsets past the file's end wrap.
content_mutation = st.one_of(
    st.tuples(st.just("flip"), st.one_of(offset_in(64, SLOTS_AT), offset_in(64, 1 << 20)), st.integers(0, 7)),
    st.tuples(st.just("byte"), offset_in(64, 1 << 20), st.integers(0, 255)),
    st.sampled_from(sorted(FIELDS)).flatmap(
        lambda f: st.tuples(st.just("field"), st.just(f), width_values(FIELDS[f][1]))),
    st.tuples(st.just("record"), st.integers(0, 7), st.sampled_from(sorted(RECORD_FIELDS))).flatmap(
        lambda t: st.tuples(st.just(t[0]), st.just(t[1]), st.just(t[2]), width_values(RECORD_FIELDS[t[2]][1]))),
    st.tuples(st.just("scramble"), st.sampled_from(sorted(REGIONS)), st.integers(0, 2**32)),
    st.tuples(st.just("ring_bytes"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=64)),
)
size_mutation = st.one_of(st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
                          st.tuples(st.just("extend"), st.integers(1, 3 * 4096)))
# Most cases keep the file's size, so that attach gets past its size checks into the calls.
case = st.tuples(
    st.sampled_from(["wrapped", "attached"]),
    st.tuples(st.lists(content_mutation, min_size=1, max_size=4),
              st.one_of(st.just([]), st.just([]), st.just([]), st.lists(size_mutation, min_size=1, max_size=1)))
    .map(lambda t: t[0] + t[1]),
)


def apply(template, mutations):
    data, records = templates()[template]
    data = bytearray(data)
    ring = u64(data, FIELDS["ring_offset"][0])

    def write(at, blob):  # overwrite in place, never grow the file
        if at < len(data):
            data[at:at + len(blob)] = blob[:len(data) - at]

    for m in mutations:
        kind = m[0]
        if not data and kind != "extend":
            continue
        if kind == "flip":
            data[m[1] % len(data)] ^= 1 << m[2]
        elif kind == "byte":
            data[m[1] % len(data)] = m[2]
        elif kind == "field":
            off, width = FIELDS[m[1]]
            write(off, m[2].to_bytes(width, "little"))
        elif kind == "record":
            off, width = RECORD_FIELDS[m[2]]
            write(records[m[1] % len(records)] + off, m[3].to_bytes(width, "little"))
        elif kind == "scramble":
            start, end = REGIONS[m[1]]
            write(start, random.Random(m[2]).randbytes(end - start))
        elif kind == "ring_bytes":
            write(ring + m[1] % (len(data) - ring) if len(data) > ring else m[1] % len(data), m[2])
        elif kind == "truncate":
            del data[m[1] % len(data):]
        elif kind == "extend":
            data += bytes(m[1])
    return bytes(data)


# -- running a batch in a worker ---------------------------------------------------------------

# Segment files a worker gets at once: the header's bit flips are over a thousand files, more
# than a container's 64 MB /dev/shm holds side by side.
GROUP_BYTES = 4 << 20


def run_batch(cases):
    """cases: [(description, file bytes)]. Returns each case's outcomes; fails on a crash or hang."""
    results, group, size = [], [], 0
    for case in cases:
        if group and size + len(case[1]) > GROUP_BYTES:
            results += run_group(group)
            group, size = [], 0
        group.append(case)
        size += len(case[1])
    results += run_group(group)
    unexpected = [(cases[i][0], what, o) for i, r in enumerate(results) for what, o in r.items()
                  if what != "messages" and o.startswith("UNEXPECTED")]
    assert not unexpected, f"calls raised exceptions outside the queue's contract: {unexpected[:5]}"
    return results


def run_group(cases):
    """Writes the cases' segment files, runs them in one worker, removes the files."""
    names = [f"afz-{uuid.uuid4().hex[:12]}-{i}" for i in range(len(cases))]
    env = child_env()
    results = []
    try:
        for name, (_, data) in zip(names, cases, strict=True):
            write_segment_file(name, data)
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([sys.executable, "-c", WORKER, *names], stdout=subprocess.PIPE,
                                    stderr=err, env=env)
            try:
                buf = b""
                deadline = time.monotonic() + CASE_TIMEOUT + 5  # the first case includes start-up
                while len(results) < len(cases):
                    left = deadline - time.monotonic()
                    ready = select.select([proc.stdout], [], [], max(left, 0))[0]
                    if not ready:
                        i = len(results)
                        pytest.fail(f"case {i} hung (no answer in {CASE_TIMEOUT} s): {cases[i][0]}")
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        proc.wait(10)
                        err.seek(0)
                        i = len(results)
                        pytest.fail(f"case {i} crashed the worker (exit {proc.returncode}): {cases[i][0]}\n"
                                    f"{err.read().decode(errors='replace')[-3000:]}")
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        i, outcome, messages = json.loads(line)
                        assert i == len(results)
                        results.append(dict(outcome, messages=messages))
                        deadline = time.monotonic() + CASE_TIMEOUT
                assert proc.wait(30) == 0, f"worker exited with {proc.returncode} after the last case"
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    finally:
        for name in names:
            try:
                os.unlink(segment_file(name))
            except FileNotFoundError:
                pass
    return results


# -- tests -------------------------------------------------------------------------------------

BATCH = 40


# No shrinking: the failure message names the exact case, and each re-run of a hang costs seconds.
# print_blob: a failure prints the @reproduce_failure line that replays it exactly.
@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
@given(st.lists(case, min_size=BATCH, max_size=BATCH))
def test_randomly_mutated_segments_are_refused_or_used_never_crash_or_hang(batch):
    run_batch([(f"{template} {mutations}", apply(template, mutations)) for template, mutations in batch])


# Found by the test above: task_done() raised on counters that were corrupt already, and the
# unwinding section's rollback refused its own journal by throwing from a destructor (abort).
SECTION_THROWS_ON_CORRUPT_COUNTERS = (
    "attached", [("flip", 323421, 0), ("field", "items", 2**31), ("ring_bytes", 30986, b"'i\xb1s\xc7\xdd"),
                 ("scramble", "slots", 180)])


def test_a_section_that_throws_on_already_corrupt_counters_rolls_back_without_aborting():
    (r,) = run_batch([("section throws", apply(*SECTION_THROWS_ON_CORRUPT_COUNTERS))])
    # Since the counters' invariants are checked at attach too, the open itself may refuse it.
    assert r["open"] == "SegmentCorruptError" or (r["task_done"] == "ValueError" and r["detach"] == "ok"), r


HEADER_FIELDS_END = SLOTS_AT  # everything before the slot table: ids, sizes, mutex, counters, journal, wait words


@pytest.mark.parametrize("template", ["wrapped", "attached"])
def test_every_single_bit_flip_in_the_header_fields_is_refused_or_used_never_crash_or_hang(template):
    ready = FIELDS["ready"][0]
    cases = [(f"{template}: flip bit {bit} of byte {off}", apply(template, [("flip", off, bit)]))
             for off in range(HEADER_FIELDS_END) for bit in range(8)
             if not ready <= off < ready + 4]  # a not-ready segment is waited for, 2 s each: one case below
    cases.append((f"{template}: ready flag cleared", apply(template, [("field", "ready", 0)])))
    results = run_batch(cases)
    # A flipped magic, version, size or mutex type is always refused at attach.
    validated = [FIELDS[f] for f in ("magic", "version", "header_bytes", "capacity", "ring_offset", "total_bytes",
                                     "mutex.kind")]
    refused = 0
    for (what, _), r in zip(cases, results, strict=True):
        off = int(what.rpartition(" ")[2]) if "of byte" in what else -1
        if any(start <= off < start + width for start, width in validated):
            assert r["open"] == "SegmentCorruptError", f"{what}: attach did not refuse it: {r}"
            refused += 1
    assert refused == 8 * sum(width for _, width in validated)


# -- the lock word and the journal -------------------------------------------------------------
# A lock holder is a live thread with the segment mapped. A lock word that names anything else
# is refused within about one 200 ms wait slice; one that names a live holder is waited for.

OWNER_DIED, WAITERS = 0x40000000, 0x80000000


def dead_pid():
    p = subprocess.Popen(["true"])
    p.wait()
    assert not os.path.exists(f"/proc/{p.pid}")
    return p.pid


def with_lock_word(word):
    data = bytearray(templates()["wrapped"][0])
    struct.pack_into("<I", data, FIELDS["mutex.lock"][0], word)
    return bytes(data)


def test_a_lock_word_naming_no_live_holder_is_refused_as_corrupt_quickly():
    bystander = subprocess.Popen(["sleep", "60"])  # alive, but has no queue mapped
    try:
        cases = [
            ("a thread that exited", with_lock_word(dead_pid())),
            ("no thread, waiters flag only", with_lock_word(WAITERS)),
            ("a live process without the queue mapped", with_lock_word(bystander.pid)),
        ]
        t0 = time.monotonic()
        results = run_batch(cases)
        elapsed = time.monotonic() - t0
    finally:
        bystander.kill()
        bystander.wait()
    for (what, _), r in zip(cases, results, strict=True):
        msg = r["messages"].get("SegmentCorruptError", "")
        assert r["open"] == "SegmentCorruptError", f"lock word naming {what}: {r}"
        assert "lock of queue" in msg and "corrupt" in msg and "cleanup --force" in msg, msg
    assert "does not exist" in results[0]["messages"]["SegmentCorruptError"]
    assert "does not have the queue mapped" in results[2]["messages"]["SegmentCorruptError"]
    assert elapsed < scaled(5), f"took {elapsed:.1f} s to refuse three bad lock words"


def test_a_lock_word_naming_pid_1_is_refused_not_waited_for_forever():
    # pid 1 is alive; whether its mappings can be read depends on the machine. Either way,
    # it does not hold the lock, so attach gives up within seconds.
    t0 = time.monotonic()
    r = run_batch([("pid 1", with_lock_word(1))])[0]
    assert r["open"] == "SegmentCorruptError" and "lock of queue" in r["messages"]["SegmentCorruptError"], r
    assert time.monotonic() - t0 < CASE_TIMEOUT


# Found in CI: the bit-flip case "bit 7 of byte 128" names tid 128, and when Ray's threads
# had brought this process's tids that far, a full scan of /dev/shm by the tools found tid 128
# alive with the segment mapped (every thread of a process shares its mappings) and waited
# forever, with the GIL held. A thread of ours holds a lock only inside a locked call.
OWN_THREAD_IN_LOCK_WORD = textwrap.dedent(
    """
    import os, shutil, struct, sys, threading, time
    from sage_ext.sage_queue.python import sage_queue, sage_queue_manager
    idle = threading.Event()
    bystander = threading.Thread(target=idle.wait, daemon=True)
    bystander.start()
    real = sage_queue.SageQueue(sys.argv[1] + "-real", capacity_bytes=65536)
    file_of = lambda name: os.path.join(sage_queue.SEGMENT_DIR, sage_queue.SEGMENT_PREFIX + name)
    path = file_of(sys.argv[1])
    shutil.copyfile(file_of(real.name), path)
    os.chmod(path, 0o600)  # as a segment is: a wider mode is refused before anything is read
    real.destroy()
    with open(path, "r+b") as f:
        f.seek(int(sys.argv[2]))
        f.write(struct.pack("<I", bystander.native_id))
    t0 = time.monotonic()
    [info] = sage_queue_manager.list_queues([sys.argv[1]])
    listed = time.monotonic() - t0
    try:
        sage_queue.SageQueue.open(sys.argv[1])
        opened = "attached"
    except sage_queue.SegmentCorruptError as e:
        opened = str(e)
    os.unlink(path)
    print(info.error, listed, opened, sep=chr(10))
    """)


def test_a_lock_word_naming_an_idle_thread_of_this_process_is_refused_not_waited_for():
    name = f"afz-own-{uuid.uuid4().hex[:12]}"
    try:
        out = subprocess.run([sys.executable, "-c", OWN_THREAD_IN_LOCK_WORD, name, str(FIELDS["mutex.lock"][0])],
                             capture_output=True, text=True, env=child_env(), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("listing a segment whose lock word names an idle thread of the lister hung for 30 s")
    finally:
        for leftover in (name, name + "-real"):
            try:
                os.unlink(segment_file(leftover))
            except FileNotFoundError:
                pass
    assert out.returncode == 0, out.stderr
    error, listed, opened = out.stdout.splitlines()
    assert "a thread of this process that is in no queue call" in error and "cleanup --force" in error, error
    assert float(listed) < scaled(2), f"took {float(listed):.1f} s to refuse it"
    assert "a thread of this process that is in no queue call" in opened, opened


HOLDER = textwrap.dedent(
    """
    import mmap, struct, sys, time
    with open(sys.argv[1], "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
    struct.pack_into("<I", mm, 128, __import__("os").getpid())  # "holds" the lock
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
    struct.pack_into("<I", mm, 128, 0)
    print("released", flush=True)
    sys.stdin.read()
    """
)


def test_a_live_holder_with_the_queue_mapped_is_waited_for_not_called_corrupt():
    q = sq().SageQueue(f"afz-{uuid.uuid4().hex[:12]}", capacity_bytes=4096)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, segment_file(q.name), "0.7"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        t0 = time.monotonic()
        q.put(b"after the holder let go", timeout=5)  # waits in lock(), then goes on
        waited = time.monotonic() - t0
        assert holder.stdout.readline().strip() == "released"
        assert q.get(timeout=1) == b"after the holder let go"
        assert 0.5 < waited < 0.7 + scaled(2), f"put returned after {waited:.2f} s: it did not wait for the holder"
    finally:
        holder.communicate("", timeout=10)
        q.destroy()


def with_journal(template, **fields):
    """A segment whose lock holder died (OWNER_DIED) inside a section with this journal."""
    data = bytearray(templates()[template][0])
    struct.pack_into("<I", data, FIELDS["mutex.lock"][0], OWNER_DIED)
    struct.pack_into("<I", data, FIELDS["journal.active"][0], 1)
    for field, value in fields.items():
        off, width = FIELDS["journal." + field]
        data[off:off + width] = value.to_bytes(width, "little")
    return bytes(data)


@pytest.mark.parametrize("template", ["wrapped", "attached"])
def test_a_dead_lock_holders_corrupt_journal_is_refused_not_replayed_forever(template):
    # Recovery restores the journal's saved counters, then walks the records from the saved
    # read to the saved tail: it must check them first, as attach checks the live ones.
    data = templates()[template][0]
    head = u64(data, FIELDS["head"][0])
    # An intact journal matches the ring: a holder that died inside a section saved the
    # counters at its start, and nothing outside the lock has moved past them since.
    live = {f: u64(data, FIELDS[f][0]) for f in ("head", "read", "tail", "items")}
    cases = [
        ("an intact journal", with_journal(template, **live)),
        ("saved slot index out of range", with_journal(template, slot_index=1 << 30, **live)),
        ("saved read past saved tail", with_journal(template, read=head + 4096, tail=head)),
        ("saved tail - head larger than the ring", with_journal(template, head=head, read=head, tail=head + 65536)),
        ("saved tail far beyond the ring", with_journal(template, read=head, tail=head + (1 << 62))),
    ]
    results = run_batch(cases)
    for (what, _), r in zip(cases[:2], results[:2], strict=True):
        assert r["open"] == "ok" and r["put"] == "ok" and r["get"] == "ok", f"{what}: not recovered: {r}"
    for (what, _), r in zip(cases[2:], results[2:], strict=True):
        assert r["open"] == "SegmentCorruptError", f"{what}: the corrupt counters were not refused: {r}"
