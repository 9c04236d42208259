"""The sage_queue tools: sage_queue_manager (list, cleanup, remove), debug_queue (inspect
one queue) and sage_demo (producers and consumers with verification)."""

import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import child_env, requires_native, scaled, segment_file, write_segment_file

pytestmark = [requires_native, pytest.mark.timeout(120)]
needs_fork = pytest.mark.skipif(mp.get_start_method() != "fork",
                                reason="patches a worker function inherited by forked children")

PKG = "sage_ext.sage_queue.python"

# A process that attaches to a queue by name, puts two items, says so, and waits.
_ATTACH_AND_WAIT = """
import sys, time
from sage_ext.sage_queue.python.sage_queue import SageQueue
q = SageQueue(sys.argv[1])
q.put(b"one")
q.put(b"two")
print("attached", flush=True)
time.sleep(120)
"""


def run_tool(module, *args):
    return subprocess.run([sys.executable, "-m", f"{PKG}.{module}", *args], capture_output=True,
                          text=True, env=child_env(), timeout=60)


@pytest.fixture
def manager():
    from sage_ext.sage_queue.python import sage_queue_manager

    return sage_queue_manager


@pytest.fixture
def debug_queue():
    from sage_ext.sage_queue.python import debug_queue

    return debug_queue


@pytest.fixture
def sq():
    from sage_ext.sage_queue.python import sage_queue

    return sage_queue


@pytest.fixture
def segments(queue_name):
    """Unique queue names whose segment files are removed after the test."""
    names = []

    def new():
        names.append(f"{queue_name}-s{len(names)}")  # make_queue uses -<n>
        return names[-1]

    yield new
    for name in names:
        try:
            os.unlink(segment_file(name))
        except IsADirectoryError:
            os.rmdir(segment_file(name))
        except FileNotFoundError:
            pass


@pytest.fixture
def attached_child():
    """Start a process attached to a queue (it has put two items); killed after the test."""
    procs = []

    def start(name):
        proc = subprocess.Popen([sys.executable, "-c", _ATTACH_AND_WAIT, name],
                                stdout=subprocess.PIPE, text=True, env=child_env())
        procs.append(proc)
        assert proc.stdout.readline() == "attached\n"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _killed_user_segment(attached_child, name):
    """A segment whose only user was SIGKILLed: it never detached."""
    proc = attached_child(name)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid


def _make_old(path, seconds=60):
    t = time.time() - seconds
    os.utime(path, (t, t))


# -- sage_queue_manager: listing ----------------------------------------------------

def test_list_shows_queue_with_its_items_and_live_pid(manager, make_queue):
    q = make_queue()
    for i in range(3):
        q.put(i)
    [info] = manager.list_queues([q.name])
    assert info.name == q.name
    assert info.path == segment_file(q.name)
    assert info.size_bytes == os.stat(segment_file(q.name)).st_size
    assert info.items == 3
    assert info.capacity_bytes == q.capacity_bytes
    assert info.live_pids == (os.getpid(),)
    assert info.dead_pids == ()
    assert info.error is None
    assert not manager.is_stale(info)
    assert q.name in [i.name for i in manager.list_queues()]  # the full scan finds it too


def test_list_of_a_name_without_segment_is_empty(manager, queue_name):
    assert manager.list_queues([queue_name]) == []


# -- cleanup -----------------------------------------------------------------------------

def test_segment_whose_only_user_was_killed_is_listed_dead_and_removed_by_cleanup(
        manager, segments, attached_child):
    name = segments()
    pid = _killed_user_segment(attached_child, name)
    [info] = manager.list_queues([name])
    assert info.live_pids == ()
    assert info.dead_pids == (pid,)
    assert info.items == 2
    assert manager.is_stale(info)

    assert manager.cleanup(min_age=0, names=[name]) == [name]
    assert not os.path.exists(segment_file(name))
    assert manager.list_queues([name]) == []


def test_cleanup_spares_a_stale_segment_younger_than_min_age(manager, segments, attached_child):
    name = segments()
    _killed_user_segment(attached_child, name)
    assert manager.cleanup(names=[name]) == []  # default min_age=5: just created
    assert os.path.exists(segment_file(name))
    _make_old(segment_file(name))
    assert manager.cleanup(names=[name]) == [name]
    assert not os.path.exists(segment_file(name))


def test_cleanup_does_not_touch_a_queue_with_a_live_user(manager, sq, segments, attached_child):
    name = segments()
    proc = attached_child(name)  # this test process is not attached: the child is the only user
    _make_old(segment_file(name))
    [info] = manager.list_queues([name])
    assert info.live_pids == (proc.pid,)
    assert not manager.is_stale(info, force=True)
    assert manager.cleanup(force=True, min_age=0, names=[name]) == []
    with sq.SageQueue.open(name) as q:  # still the same queue, items intact
        assert q.get_many(10, timeout=5) == [b"one", b"two"]


def test_persistent_queue_survives_cleanup_without_force(manager, sq, segments):
    name = segments()
    q = sq.SageQueue(name, persistent=True)
    q.put(b"kept")
    q.detach()
    [info] = manager.list_queues([name])
    assert info.persistent and info.live_pids == () and info.items == 1
    assert not manager.is_stale(info)
    assert manager.is_stale(info, force=True)

    assert manager.cleanup(min_age=0, names=[name]) == []
    with sq.SageQueue.open(name) as q:
        assert q.get_nowait() == b"kept"
    assert os.path.exists(segment_file(name))  # persistent: the last detach keeps it
    assert manager.cleanup(force=True, min_age=0, names=[name]) == [name]
    assert not os.path.exists(segment_file(name))


@pytest.mark.parametrize("content, old", [
    (b"not a queue " * 100, False),  # not a whole number of pages
    (b"\xff" * 16384, False),  # whole pages, bad magic
    (bytes(16384), True),  # blank: a creator that died before initialising it
], ids=["short", "bad-magic", "never-initialised"])
def test_corrupt_segment_is_listed_with_error_and_removed_only_with_force(
        manager, segments, content, old):
    name = segments()
    path = write_segment_file(name, content)
    if old:
        _make_old(path)
    t0 = time.monotonic()
    [info] = manager.list_queues([name])
    assert time.monotonic() - t0 < scaled(1.5)  # reported at once, not after the 2 s wait for a creator
    assert info.error and info.problem == "unreadable"
    assert "sage queue cleanup --force" in info.error and "python -m" not in info.error
    assert info.items is None and info.live_pids == ()
    assert info.size_bytes == len(content)
    assert not manager.is_stale(info)

    assert manager.cleanup(min_age=0, names=[name]) == []
    assert os.path.exists(path)
    assert manager.cleanup(force=True, min_age=0, names=[name]) == [name]
    assert not os.path.exists(path)


def test_dry_run_removes_nothing_but_names_what_would_go(manager, segments, attached_child):
    name = segments()
    _killed_user_segment(attached_child, name)
    assert manager.cleanup(min_age=0, dry_run=True, names=[name]) == [name]
    assert os.path.exists(segment_file(name))


# -- remove --------------------------------------------------------------------------

def test_remove_closes_a_queue_in_use_and_removes_its_name(manager, sq, make_queue):
    q = make_queue()
    q.put(1)
    manager.remove(q.name)
    assert not os.path.exists(segment_file(q.name))
    assert q.closed
    with pytest.raises(sq.QueueClosed):
        q.put(2)


def test_remove_of_a_missing_name_is_file_not_found(manager, queue_name):
    with pytest.raises(FileNotFoundError, match=queue_name):
        manager.remove(queue_name)
    assert not os.path.exists(segment_file(queue_name))


# -- the manager's CLI -------------------------------------------------------------

def test_cli_list_json_parses_and_shows_the_queue(make_queue):
    q = make_queue()
    q.put_many([1, 2])
    r = run_tool("sage_queue_manager", "list", "--json")
    assert r.returncode == 0, r.stderr
    [entry] = [e for e in json.loads(r.stdout) if e["name"] == q.name]
    assert entry["items"] == 2
    assert entry["live_pids"] == [os.getpid()]
    assert entry["stale"] is False and entry["error"] is None


def test_cli_list_table_has_a_row_per_segment(make_queue, segments):
    q = make_queue()
    q.put(1)
    junk = segments()
    write_segment_file(junk, b"junk")
    r = run_tool("sage_queue_manager", "list", q.name, junk)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "SIZE", "ITEMS"]
    row = next(line for line in lines if line.startswith(q.name + " "))
    assert row.split()[2] == "1" and str(os.getpid()) in row and "in use" in row
    assert "error" in next(line for line in lines if line.startswith(junk + " "))


def test_cli_cleanup_removes_stale_and_dry_run_keeps_it(segments, attached_child):
    name = segments()
    _killed_user_segment(attached_child, name)
    r = run_tool("sage_queue_manager", "cleanup", name, "--min-age", "0", "--dry-run")
    assert r.returncode == 0 and f"would remove {name}" in r.stdout
    assert os.path.exists(segment_file(name))
    r = run_tool("sage_queue_manager", "cleanup", name, "--min-age", "0")
    assert r.returncode == 0 and f"removed {name}" in r.stdout
    assert not os.path.exists(segment_file(name))


def test_cli_remove_of_a_missing_name_exits_1_with_a_clear_message(queue_name):
    r = run_tool("sage_queue_manager", "remove", queue_name)
    assert r.returncode == 1
    assert f"no queue named '{queue_name}'" in r.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["cleanup", "--min-age", "soon"]])
def test_cli_usage_errors_exit_2(args):
    assert run_tool("sage_queue_manager", *args).returncode == 2


# -- debug_queue -------------------------------------------------------------------------

def native():
    from sage_ext.sage_queue.python import _native

    return _native


def native_layout_version():
    return native().LAYOUT_VERSION


def test_debug_queue_cli_prints_header_and_counters(make_queue):
    q = make_queue(maxsize=7)
    q.put_many([b"a", b"b", b"c"])
    q.get()
    r = run_tool("debug_queue", q.name)
    assert r.returncode == 0, r.stderr

    def field(key):
        m = re.search(rf"^\s+{key}\s+(.+)$", r.stdout, re.M)
        assert m, f"no {key!r} line in:\n{r.stdout}"
        return m.group(1)

    assert field("puts") == "3" and field("gets") == "1" and field("items") == "2"
    assert field("maxsize") == "7" and field("layout version") == str(native_layout_version())
    assert field("mode") == "0600"
    assert field(str(os.getpid())) == "alive"
    for key in ("head", "read", "tail", "used_bytes", "bytes_put", "lock_recoveries"):
        field(key)


def test_debug_queue_json_has_info_and_file_facts(make_queue):
    q = make_queue()
    q.put(b"x")
    r = run_tool("debug_queue", q.name, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["stats"]["puts"] == 1 and d["items"] == 1
    assert d["attached"] == [[os.getpid(), "alive"]]
    assert d["path"] == segment_file(q.name)
    assert d["size_bytes"] == os.stat(segment_file(q.name)).st_size
    assert d["mode"] == 0o600 and d["owner_uid"] == os.getuid()


def test_inspecting_takes_no_user_slot_and_changes_nothing(debug_queue, make_queue):
    q = make_queue()
    q.put(b"x")
    before = q.stats()
    d = debug_queue.describe(q.name)
    assert d["attached"] == [(os.getpid(), "alive")]
    assert q.stats() == before
    q.detach()  # the last user: the inspector must not have kept it alive
    assert not os.path.exists(segment_file(q.name))


def test_describing_a_missing_queue_raises_and_creates_nothing(debug_queue, queue_name):
    with pytest.raises(FileNotFoundError, match=queue_name):
        debug_queue.describe(queue_name)
    assert not os.path.exists(segment_file(queue_name))
    r = run_tool("debug_queue", queue_name)
    assert r.returncode == 1 and "no queue named" in r.stderr
    assert not os.path.exists(segment_file(queue_name))


# -- files at a queue's name that are not a queue, or not ours ------------------------------
# A FIFO, a symlink or a directory at a queue's name is "not a queue": the tools never open a
# FIFO (a plain open blocks until a writer comes) and never follow a symlink. A file of
# another user, or one of ours whose mode is not 0600, is "not trusted". All are listed and
# left alone; `cleanup --force` and `remove` delete ours, never another user's.

TOOL_TIMEOUT = 20  # seconds (scaled); a tool that blocks on the FIFO never answers at all


def sage(*args):
    """`sage ARGS` in a fresh interpreter; a hang is a failed test, not a stuck worker."""
    cmd = [sys.executable, "-m", "sage", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=child_env(),
                              timeout=scaled(TOOL_TIMEOUT), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`sage {' '.join(args)}` did not return in {scaled(TOOL_TIMEOUT):g} s")


@pytest.fixture
def decoy(tmp_path):
    """A file of ours that a planted symlink points at: it must never be read or removed."""
    path = tmp_path / "decoy"
    path.write_bytes(native().MAGIC + bytes(native().PAGE_BYTES - 8))
    os.chmod(path, 0o600)
    return path


def plant(kind, name, decoy=None):
    """Put a `kind` thing at queue `name`'s path; returns a description for messages."""
    path = segment_file(name)
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "symlink":
        os.symlink(decoy, path)
    elif kind == "symlink-to-a-queue":
        os.symlink(segment_file(decoy), path)
    elif kind == "directory":
        os.mkdir(path, 0o700)
    elif kind == "socket":
        import socket

        with socket.socket(socket.AF_UNIX) as s:
            s.bind(path)
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("mknod of a device node needs root")
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    elif kind == "mode-0644":
        write_segment_file(name, bytes(4096), mode=0o644)
    else:
        raise AssertionError(kind)
    return path


FILE_TYPE = {"fifo": "FIFO", "symlink": "symlink", "symlink-to-a-queue": "symlink", "directory": "directory",
             "socket": "socket", "device": "character device"}


def _gone(path):
    return not os.path.lexists(path)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_list_inspect_cleanup_and_remove_return_at_once_on_a_fifo_or_symlink_and_call_it_not_a_queue(
        segments, decoy, kind):
    name = segments()
    path = plant(kind, name, decoy)
    r = sage("queue", "inspect", name)  # before the fix: blocked in open() on the FIFO
    assert r.returncode == 1 and "is not a queue" in r.stderr and FILE_TYPE[kind] in r.stderr, r
    assert "sage queue cleanup --force" in r.stderr and "python -m" not in r.stderr, r.stderr

    r = sage("queue", "list", name)  # before the fix: skipped, so cleanup could never remove it
    assert r.returncode == 0, r.stderr
    [row] = [line for line in r.stdout.splitlines() if line.startswith(name + " ")]
    assert f"not a queue ({FILE_TYPE[kind]}" in row, r.stdout
    assert "sage queue cleanup --force" in r.stdout, r.stdout

    r = sage("queue", "cleanup", name)  # without --force: listed and left
    assert r.returncode == 0 and "sage queue cleanup --force" in r.stdout, r
    assert os.path.lexists(path)

    r = sage("queue", "cleanup", "--force", name)
    assert r.returncode == 0 and f"removed {name}" in r.stdout, r
    assert _gone(path)
    assert decoy.read_bytes()[:8] == native().MAGIC, "the symlink's target was touched"

    plant(kind, name, decoy)
    r = sage("queue", "remove", name)
    assert r.returncode == 0 and f"removed {name}" in r.stdout, r
    assert _gone(path) and decoy.exists()


@pytest.mark.parametrize("kind", ["fifo", "symlink", "symlink-to-a-queue", "directory", "socket", "device",
                                  "mode-0644"])
def test_a_file_of_ours_that_is_not_a_queue_or_not_trusted_is_listed_and_removed_only_with_force(
        manager, debug_queue, make_queue, segments, decoy, kind):
    target = make_queue()  # a live queue of ours: a symlink to it must not lead the tools there
    target.put(b"kept")
    name = segments()
    path = plant(kind, name, target.name if kind == "symlink-to-a-queue" else decoy)
    t0 = time.monotonic()
    [info] = manager.list_queues([name])
    assert time.monotonic() - t0 < scaled(2)
    problem = "not trusted" if kind == "mode-0644" else "not a queue"
    assert info.problem == problem and info.ours and info.items is None, info
    assert info.file_type == ("regular file" if kind == "mode-0644" else FILE_TYPE[kind])
    assert info.live_pids == info.dead_pids == () and not manager.is_stale(info)
    assert "sage queue cleanup --force" in info.advice
    expected_error = debug_queue.NotAQueueError if problem == "not a queue" else debug_queue.SegmentUntrustedError
    with pytest.raises(expected_error, match=problem):
        debug_queue.describe(name)
    assert issubclass(expected_error, PermissionError)

    assert manager.cleanup(min_age=0, names=[name]) == []
    assert os.path.lexists(path)
    assert manager.cleanup(force=True, dry_run=True, names=[name]) == [name]
    assert os.path.lexists(path)
    assert manager.cleanup(force=True, names=[name]) == [name]  # no age guard: never a queue being made
    assert _gone(path)
    assert target.get_nowait() == b"kept" and decoy.exists()


def test_a_file_of_another_user_is_not_trusted_and_never_removed(manager, debug_queue, segments):
    if os.geteuid() != 0:
        pytest.skip("planting a file of another user needs root")
    name = segments()
    path = write_segment_file(name, native().MAGIC + bytes(native().PAGE_BYTES - 8))
    os.chown(path, 65534, 65534)  # nobody's, mode 0600: a planted denial of service
    [info] = manager.list_queues([name])
    assert info.problem == "not trusted" and not info.ours and info.owner_uid == 65534, info
    assert "uid 65534" in info.error and "0600" in info.error
    assert "ask that user or root to remove it, or use another queue name" in info.advice
    with pytest.raises(debug_queue.SegmentUntrustedError, match="uid 65534"):
        debug_queue.describe(name)
    assert not manager.is_stale(info, force=True)
    assert manager.cleanup(force=True, min_age=0, names=[name]) == []
    with pytest.raises(PermissionError, match="ask that user or root"):
        manager.remove(name)
    assert os.path.exists(path)
    r = sage("queue", "list", name)
    assert r.returncode == 0 and "not trusted (owner uid 65534, mode 0600)" in r.stdout, r
    assert "uid 65534 (nobody): ask that user or root to remove it" in r.stdout, r.stdout
    r = sage("queue", "cleanup", "--force", name)
    assert r.returncode == 0 and "ask that user or root" in r.stdout and os.path.exists(path), r
    r = sage("queue", "remove", name)
    assert r.returncode == 1 and "ask that user or root" in r.stderr and os.path.exists(path), r

    fifo = segments()  # another user's FIFO: not a queue, and not ours to remove either
    os.mkfifo(segment_file(fifo), 0o600)
    os.chown(segment_file(fifo), 65534, 65534)
    [info] = manager.list_queues([fifo])
    assert info.problem == "not a queue" and info.file_type == "FIFO" and not info.ours, info
    assert manager.cleanup(force=True, min_age=0, names=[fifo]) == []
    with pytest.raises(PermissionError, match="is not a queue"):
        manager.remove(fifo)
    assert os.path.lexists(segment_file(fifo))


_IN_ANOTHER_PID_NAMESPACE = """
import sys
from sage_ext.sage_queue.python.sage_queue import SageQueue
q = SageQueue(sys.argv[1])
q.put(b"from another pid namespace")
print("attached", flush=True)
sys.stdin.read()
"""


def test_a_queue_used_from_another_pid_namespace_is_in_use_and_removed_only_with_force(manager, segments):
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root to start a process in a new pid namespace")
    name = segments()
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                             _IN_ANOTHER_PID_NAMESPACE, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        line = proc.stdout.readline()
        if line != "attached\n":
            proc.kill()
            pytest.skip(f"cannot run a process in a new pid namespace here: {proc.communicate()[1][-500:]}")
        _make_old(segment_file(name))
        [info] = manager.list_queues([name])
        assert info.live_pids == () and info.dead_pids == () and len(info.unknown_pids) == 1, info
        assert not manager.is_stale(info) and manager.is_stale(info, force=True)
        assert manager.cleanup(min_age=0, names=[name]) == []
        assert os.path.exists(segment_file(name))
        r = sage("queue", "list", name)
        assert "in use (other pid namespace)" in r.stdout, r.stdout
        assert manager.cleanup(force=True, min_age=0, names=[name]) == [name]
        assert not os.path.exists(segment_file(name))
    finally:
        proc.kill()
        proc.wait()


# -- sage_demo -----------------------------------------------------------------------------

def _demo_segments():
    prefix = native().SEGMENT_PREFIX
    mine = (f"{prefix}sage_demo-{os.getpid()}-", f"{prefix}sage_demo-results-{os.getpid()}-")
    return [n for n in os.listdir(native().SEGMENT_DIR) if n.startswith(mine)]


def test_demo_with_small_counts_delivers_every_item_once():
    from sage_ext.sage_queue.python import sage_demo

    lines = []
    result = sage_demo.run_demo(items=3001, producers=3, consumers=2, payload_bytes=40, batch=16,
                                report=lines.append)
    assert result["ok"], result
    assert (result["received"], result["lost"], result["duplicated"]) == (3001, 0, 0)
    assert result["items_per_s"] > 0 and result["mb_per_s"] > 0
    assert "items/s" in lines[-1] and "MB/s" in lines[-1] and "verified" in lines[-1]
    assert _demo_segments() == []


@needs_fork
def test_demo_verification_catches_lost_and_duplicated_items(monkeypatch):
    from sage_ext.sage_queue.python import sage_demo

    real = sage_demo._produce

    def faulty(q, producer, count, payload_bytes, *rest):
        # sends item 0 twice and never sends the last one
        q.put(sage_demo._HEADER.pack(producer, 0) + bytes(payload_bytes))
        real(q, producer, count - 1, payload_bytes, *rest)

    monkeypatch.setattr(sage_demo, "_produce", faulty)
    result = sage_demo.run_demo(items=200, producers=2, consumers=2, payload_bytes=8, batch=4,
                                report=None)
    assert not result["ok"]
    assert result["lost"] == 2 and result["duplicated"] == 2
    assert sage_demo.main(["--items", "100", "--producers", "1", "--consumers", "1"]) == 1
    assert _demo_segments() == []


@needs_fork
def test_demo_fails_instead_of_hanging_when_a_consumer_dies(monkeypatch):
    from sage_ext.sage_queue.python import sage_demo

    def crash(*args):
        os._exit(3)

    monkeypatch.setattr(sage_demo, "_consume", crash)
    result = sage_demo.run_demo(items=100_000, producers=1, consumers=1, payload_bytes=1000,
                                batch=8, report=None)
    assert not result["ok"] and result["failed_workers"] >= 1 and result["lost"] == 100_000


def test_demo_cli_prints_throughput_and_exits_0():
    r = run_tool("sage_demo", "--items", "500", "--producers", "2", "--consumers", "2",
                 "--batch", "1")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^500 items in .* items/s, .* MB/s .*verified", r.stdout, re.M), r.stdout
