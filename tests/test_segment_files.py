"""Faults of a segment's file: foreign and corrupt segments at attach, segments left
unfinished by a creator that died, a corrupt record in an attached segment, a /dev/shm too
small for the queue, and the file's mode and lifetime.

Attaches run in fresh interpreters, so a crash fails the test instead of killing the
pytest worker. Files are written at the offsets the native module reports
(_native.LAYOUT, through tests/segment_layout.py).
"""

import collections
import errno
import json
import multiprocessing as mp
import os
import shutil
import stat
import struct
import subprocess
import sys
import textwrap

import pytest

import fault_workers as fw
from conftest import (
    child_env,
    kill,
    requires_native,
    scaled,
    segment_file,
    wait_for,
    write_segment_file,
)
from conftest import (
    new_queue_name as new_name,
)
from conftest import (
    sage_queue_module as sq,
)

ctx = mp.get_context("fork")

pytestmark = [requires_native, pytest.mark.timeout(120)]

try:
    from segment_layout import LAYOUT, field
except ImportError:  # no native build: every test here is skipped (requires_native)
    LAYOUT = collections.defaultdict(int)

    def field(name):
        return 0

OFF_MAGIC, OFF_VERSION, OFF_HEADER_BYTES, OFF_CAPACITY = (
    field("segment.magic"), field("segment.version"), field("segment.header_bytes"), field("segment.capacity"))
OFF_RING, OFF_TOTAL, OFF_READY = field("segment.ring_offset"), field("segment.total_bytes"), field("segment.ready")
OFF_HEAD = field("counters.head")
REC_STATE, REC_LEN = LAYOUT["record.state"], LAYOUT["record.len"]


# -- foreign and corrupt segments ------------------------------------------------------------

OPEN_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from sage_ext.sage_queue.python.sage_queue import SageQueue, SegmentCorruptError
    name, action = sys.argv[1], sys.argv[2]
    t0 = time.monotonic()
    out = {}
    try:
        q = SageQueue.open(name)
        out["result"] = "opened"
        if action == "get":
            q.get_nowait()
            out["result"] = "got"
    except SegmentCorruptError as e:
        out.update(result="corrupt", msg=str(e), oserror=isinstance(e, OSError))
    except BaseException as e:
        out.update(result=type(e).__name__, msg=str(e))
    out["elapsed"] = time.monotonic() - t0
    print(json.dumps(out))
    """
)


def run_open(name, action="open", timeout=20):
    """Attach in a fresh interpreter: a crash is a failed test, not a dead pytest worker."""
    env = child_env()
    try:
        r = subprocess.run([sys.executable, "-c", OPEN_SCRIPT, name, action], capture_output=True,
                           text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"attaching to {name} hung for more than {timeout} s")
    assert r.returncode == 0, f"attaching crashed the process (exit {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def real_segment_bytes(items=()):
    """The bytes of a real, idle queue's segment (64 KiB ring)."""
    name = new_name()
    q = sq().SageQueue(name, capacity_bytes=64 * 1024)
    try:
        for item in items:
            q.put(item)
        with open(segment_file(name), "rb") as f:
            return bytearray(f.read())
    finally:
        q.destroy()


def patched(offset, fmt, value):
    def patch(data):
        struct.pack_into(fmt, data, offset, value)
        return data

    return patch


CORRUPT_CASES = {
    # name: (make the file's bytes, words the message must contain, or a tuple of choices)
    "random_bytes": (lambda real: bytearray(os.urandom(len(real))), ("never initialised", "not a sage_queue")),
    "random_bytes_marked_ready": (lambda real: patched(OFF_READY, "<I", 1)(bytearray(os.urandom(len(real)))),
                                  "not a sage_queue segment"),
    "too_short": (lambda real: real[:100], ("never initialised", "too short", "too small", "not a sage_queue")),
    "truncated_real_segment": (lambda real: real[: len(real) // 2], "sizes are inconsistent"),
    "extended_real_segment": (lambda real: real + bytes(4096), "sizes are inconsistent"),
    "bad_magic": (patched(OFF_MAGIC, "<8s", b"NOTAQUEU"), "bad magic"),
    "bad_version": (patched(OFF_VERSION, "<I", 99), "layout version is 99"),
    "bad_header_size": (patched(OFF_HEADER_BYTES, "<I", 12345), "header size"),
    "bad_capacity": (patched(OFF_CAPACITY, "<Q", 1 << 30), "sizes are inconsistent"),
    "capacity_not_page_multiple": (patched(OFF_CAPACITY, "<Q", 64 * 1024 - 8), "sizes are inconsistent"),
    "bad_total_size": (patched(OFF_TOTAL, "<Q", 1 << 40), "sizes are inconsistent"),
    "ring_offsets_inconsistent": (patched(OFF_HEAD, "<Q", 1 << 20),
                                  ("ring offsets are inconsistent", "ring positions are out of order")),
}


@pytest.mark.parametrize("case", list(CORRUPT_CASES))
def test_attaching_to_a_foreign_or_corrupt_segment_raises_segment_corrupt_error(fresh, case):
    make, words = CORRUPT_CASES[case]
    name = fresh.name()
    write_segment_file(name, make(real_segment_bytes([b"an item"])))
    r = run_open(name)
    assert r["result"] == "corrupt", f"expected SegmentCorruptError, got {r}"
    assert r["oserror"], "SegmentCorruptError must be an OSError"
    choices = words if isinstance(words, tuple) else (words,)
    assert name in r["msg"] and any(w in r["msg"] for w in choices), f"unclear message: {r['msg']!r}"
    assert r["elapsed"] < scaled(5), f"took {r['elapsed']:.1f} s to give up"


# A creator locks its file from creation until the segment is ready: a file that is not
# ready, whose lock nobody holds, and that is older than an opener waits was left by a
# creator that died while creating it.
UNFINISHED_CASES = {
    "died_before_sizing": lambda real: bytearray(),
    "died_before_marking_ready": patched(OFF_READY, "<I", 0),
}


@pytest.mark.parametrize("case", list(UNFINISHED_CASES))
def test_a_segment_left_unfinished_by_a_dead_creator_is_removed_and_its_name_reused(fresh, case):
    name = fresh.name()
    path = write_segment_file(name, UNFINISHED_CASES[case](real_segment_bytes()))
    r = run_open(name)  # open only: the name is free again, and says why
    assert r["result"] == "FileNotFoundError", r
    assert name in r["msg"] and "died while creating it" in r["msg"] and "removed" in r["msg"], r["msg"]
    assert not os.path.exists(path)
    write_segment_file(name, UNFINISHED_CASES[case](real_segment_bytes()))
    q = sq().SageQueue(name)  # open or create: a fresh queue under the same name
    try:
        q.put("fresh")
        assert q.get(timeout=5) == "fresh"
        assert os.stat(path).st_size > 0
    finally:
        q.destroy()


UNFINISHED_CREATOR = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a creator does, until its segment is ready
    os.ftruncate(fd, int(sys.argv[2]))
    print("created", flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


def test_an_opener_waits_for_a_live_creator_and_reuses_the_name_once_it_dies(fresh):
    name = fresh.name()
    size = len(real_segment_bytes())
    creator = subprocess.Popen([sys.executable, "-c", UNFINISHED_CREATOR, segment_file(name), str(size), "60"],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert creator.stdout.readline().strip() == "created"
        # Alive and holding its lock past the wait: refused as never initialised, not removed.
        r = run_open(name)
        assert r["result"] == "corrupt" and "never initialised" in r["msg"], r
        assert os.path.exists(segment_file(name))
    finally:
        creator.kill()
        creator.wait()
    r = run_open(name)  # its creator is dead now
    assert r["result"] == "FileNotFoundError" and "died while creating it" in r["msg"], r
    assert not os.path.exists(segment_file(name))


CORRUPT_RECORD_SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, mmap, struct, sys, threading, time
    from sage_ext.sage_queue.python.sage_queue import SageQueue, SegmentCorruptError
    name, path, off_ring, field_off, fmt, value = sys.argv[1:7]
    q = SageQueue(name, capacity_bytes=64 * 1024)
    q.put(b"an item")

    def state():
        info = q.info()
        return dict(dataclasses.asdict(q.stats()), head=info["head"], read=info["read"], tail=info["tail"])

    # Corrupt the record's header after attach, as another process writing the segment would.
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 0)
    ring = struct.unpack_from("<Q", mm, int(off_ring))[0]
    struct.pack_into(fmt, mm, ring + int(field_off), int(value))
    before = state()
    out = {}
    try:
        q.get_nowait()
        out["result"] = "got"
    except SegmentCorruptError as e:
        out.update(result="corrupt", msg=str(e))
    except BaseException as e:
        out.update(result=type(e).__name__, msg=str(e))
    after = state()
    out["changed"] = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    # The lock was released: a locked call from another thread returns at once.
    done = []
    t0 = time.monotonic()
    t = threading.Thread(target=lambda: done.append(q.info()["items"]), daemon=True)
    t.start()
    t.join(10)
    out["other_thread"] = [done, time.monotonic() - t0]
    # Still usable for what does not touch the corrupt record.
    try:
        q.put(b"after", timeout=1)
        s = q.stats()
        out["after_put"] = [q.qsize(), s.puts - before["puts"], s.bytes_put - before["bytes_put"]]
    except BaseException as e:
        out["after_put"] = type(e).__name__ + ": " + str(e)
    try:
        q.get_nowait()
        out["second_get"] = "got"
    except BaseException as e:
        out["second_get"] = type(e).__name__
    print(json.dumps(out), flush=True)
    """
)


@pytest.mark.parametrize("field,fmt,value", [("state", "<I", 99), ("len", "<Q", 1 << 40)])
def test_corrupt_record_in_an_attached_segment_raises_instead_of_crashing(fresh, field, fmt, value):
    name = fresh.name()
    offset = {"state": REC_STATE, "len": REC_LEN}[field]
    argv = [sys.executable, "-c", CORRUPT_RECORD_SCRIPT, name, segment_file(name), str(OFF_RING), str(offset),
            fmt, str(value)]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(30), env=child_env())
    except subprocess.TimeoutExpired:
        pytest.fail("a get() of a corrupt record hung")
    assert p.returncode == 0, (
        f"a get() of a corrupt record crashed the process (exit {p.returncode}): {p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["result"] == "corrupt" and "corrupt record" in r["msg"], r
    assert r["changed"] == {}, f"the refused get was not rolled back: {r['changed']} (before, after)"
    items, seconds = r["other_thread"]
    assert items == [1] and seconds < scaled(0.5), f"the lock was not released: another call {r['other_thread']}"
    assert r["after_put"] == [2, 1, len(b"after")], f"a put after the corrupt record: {r['after_put']}"
    assert r["second_get"] == "SegmentCorruptError", "the corrupt record was skipped silently the second time"


# -- not enough room in /dev/shm ---------------------------------------------------------------

ENOSPC_SCRIPT = textwrap.dedent(
    """
    import json, os
    from sage_ext.sage_queue.python.sage_queue import SageQueue
    name = "enospc-" + os.urandom(6).hex()
    out = {"shm_bytes": os.statvfs("/dev/shm").f_blocks * os.statvfs("/dev/shm").f_frsize}
    try:
        SageQueue(name, capacity_bytes=8 << 20)
        out["result"] = "created"
    except OSError as e:
        out.update(result="OSError", errno=e.errno, msg=str(e))
    out["left"] = [f for f in os.listdir("/dev/shm") if name in f]
    with SageQueue(name + "-small", capacity_bytes=64 * 1024) as q:  # what fits still works
        q.put("fits")
        out["small"] = q.get(timeout=1)
    print(json.dumps(out))
    """
)


def test_creating_a_queue_larger_than_dev_shm_is_enospc_naming_shm_size_and_leaves_nothing(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a private 1 MiB /dev/shm")
    env = child_env()
    script = tmp_path / "enospc.py"
    script.write_text(ENOSPC_SCRIPT)
    cmd = ["unshare", "-m", "sh", "-c",
           f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} {script}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env)
    if r.returncode != 0 and not r.stdout.strip():
        if "unshare" in r.stderr or "mount" in r.stderr or "ermission" in r.stderr:
            pytest.skip(f"unshare -m / mount of a private tmpfs is not permitted here: {r.stderr.strip()}")
        pytest.fail(f"the ENOSPC probe crashed (exit {r.returncode}): {r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["shm_bytes"] <= 1 << 20, "the private /dev/shm was not mounted"
    assert out["result"] == "OSError" and out["errno"] == errno.ENOSPC, out
    assert "/dev/shm" in out["msg"] and "--shm-size" in out["msg"], f"unhelpful message: {out['msg']!r}"
    assert out["left"] == [], f"a failed create left {out['left']} behind"
    assert out["small"] == "fits"


# -- permissions and lifetime of the segment ----------------------------------------------------


def test_segment_is_mode_0600_and_owned_by_the_creator_whatever_the_umask(fresh):
    old = os.umask(0)
    try:
        q = fresh.queue()
    finally:
        os.umask(old)
    st = os.stat(segment_file(q.name))
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


def test_segment_is_removed_once_every_user_detached_or_exited(fresh):
    name = fresh.name()
    path = segment_file(name)
    q = sq().SageQueue(name)
    p = ctx.Process(target=fw.attach_put_and_exit, args=(name, "from a child"))  # exits normally
    p.start()
    p.join(10)
    assert p.exitcode == 0 and os.path.exists(path)
    env = child_env()
    code = ("import sys, time; from sage_ext.sage_queue.python.sage_queue import SageQueue; "
            "q = SageQueue.open(sys.argv[1]); print(q.get(timeout=5)); sys.stdout.flush(); sys.stdin.read()")
    other = subprocess.Popen([sys.executable, "-c", code, name], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert other.stdout.readline().strip() == "from a child"
        started = ctx.RawValue("i", 0)
        killed = fresh.process(fw.get_one, q, started)  # attached, then SIGKILLed
        wait_for(lambda: started.value, 10, "the child to attach")
        kill(killed)
        q.detach()  # the creator leaves first; the other interpreter is still attached
        assert os.path.exists(path), "removed while another process was still attached"
    finally:
        other.communicate("", timeout=10)  # it exits normally, the last live user
    assert other.returncode == 0
    assert not os.path.exists(path), "segment left behind after every user left"


def test_persistent_queue_survives_all_users_until_destroyed(fresh):
    name = fresh.name()
    path = segment_file(name)
    q = sq().SageQueue(name, persistent=True)
    q.put("kept")
    q.detach()
    assert os.path.exists(path)
    p = ctx.Process(target=fw.attach_put_and_exit, args=(name, "also kept"))
    p.start()
    p.join(10)
    assert p.exitcode == 0 and os.path.exists(path)
    q = sq().SageQueue.open(name)
    assert q.get_many(4, timeout=1) == ["kept", "also kept"]
    q.destroy()
    assert not os.path.exists(path)
