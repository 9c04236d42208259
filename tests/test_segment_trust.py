"""Files at a queue's name are input from strangers: which ones a queue opens, what a
refused open leaves behind, and whose names a queue removes.

Each scenario that could hang or crash on a broken core runs in a child interpreter with a
time limit, so a regression fails the test instead of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import uuid

import pytest

from conftest import child_env, requires_native, scaled, segment_file, write_segment_file

pytestmark = requires_native

NOBODY = 65534


def run_child(script: str, timeout: float = 30, **env) -> dict:
    """Runs `script` in a fresh interpreter; its last stdout line is JSON. A child killed by
    a signal or out of time fails the test, naming what happened."""
    try:
        p = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                           timeout=scaled(timeout), env=child_env(**env))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung (no answer in {scaled(timeout):.0f} s); its output: {exc.stdout!r}")
    assert p.returncode >= 0, f"the child died by signal {-p.returncode}; stderr: {p.stderr[-2000:]}"
    assert p.returncode == 0, f"the child failed: {p.stderr[-3000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture
def name():
    made = f"trust-{uuid.uuid4().hex[:16]}"
    yield made
    for path in (segment_file(made), segment_file(made) + ".target"):
        if os.path.lexists(path):
            os.unlink(path)


def real_segment_bytes(items) -> bytes:
    """The file of a real queue holding `items`, copied while attached."""
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue(f"trust-template-{uuid.uuid4().hex[:12]}", capacity_bytes=64 * 1024)
    try:
        for item in items:
            q.put(item)
        with open(segment_file(q.name), "rb") as f:
            return f.read()
    finally:
        q.destroy()


class Planted:
    """A pickle that, once unpickled, creates a file: proof that planted code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


OPEN_AND_GET = """
    import json, os
    from sage_ext.sage_queue.python.sage_queue import SageQueue
    try:
        q = SageQueue({name!r})
        got = repr(q.get(timeout=1))
        out = dict(result="opened", got=got)
    except Exception as exc:
        out = dict(result=type(exc).__name__, msg=str(exc), permission=isinstance(exc, PermissionError))
    print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file of another user needs root (chown)")
@pytest.mark.parametrize("mode", [0o666, 0o600, 0o644])
def test_a_segment_planted_by_another_user_is_refused_and_its_pickle_never_runs(name, tmp_path, mode):
    marker = tmp_path / "planted-code-ran"
    path = write_segment_file(name, real_segment_bytes([Planted(str(marker))]), mode)
    os.chown(path, NOBODY, NOBODY)
    r = run_child(OPEN_AND_GET.format(name=name))
    assert r["result"] == "SegmentUntrustedError" and r["permission"], r
    assert not marker.exists(), "the planted pickle ran in the consumer"
    assert path in r["msg"] and "uid 65534" in r["msg"] and f"{mode:04o}" in r["msg"], r["msg"]
    assert "only its owner may open it" in r["msg"] and "root" in r["msg"], r["msg"]
    assert os.stat(path).st_uid == NOBODY  # refused, not touched


def test_our_own_segment_with_a_wider_mode_is_refused_with_the_fix(name, tmp_path):
    marker = tmp_path / "planted-code-ran"
    path = write_segment_file(name, real_segment_bytes([Planted(str(marker))]), 0o666)
    r = run_child(OPEN_AND_GET.format(name=name))
    assert r["result"] == "SegmentUntrustedError", r
    assert "mode 0666" in r["msg"] and "sage queue cleanup --force" in r["msg"], r["msg"]
    assert not marker.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # state unchanged


def test_a_symlink_at_the_name_is_not_followed(name):
    target = segment_file(name) + ".target"
    write_segment_file(name + ".target", real_segment_bytes([b"x"]))  # the file at `target`
    os.symlink(target, segment_file(name))
    before = os.stat(target)
    r = run_child(OPEN_AND_GET.format(name=name))
    assert r["result"] == "SegmentUntrustedError" and "symbolic link" in r["msg"], r
    after = os.stat(target)
    assert (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size)


def test_a_fifo_at_the_name_is_refused_at_once_not_opened(name):
    os.mkfifo(segment_file(name), 0o600)
    r = run_child(OPEN_AND_GET.format(name=name), timeout=10)
    assert r["result"] == "SegmentUntrustedError" and "FIFO" in r["msg"], r


MAPPINGS_AFTER_REFUSED_OPENS = """
    import json
    from sage_ext.sage_queue.python.sage_queue import SageQueue
    errors = set()
    for _ in range(50):
        try:
            SageQueue.open({name!r})
        except Exception as exc:
            errors.add(type(exc).__name__)
    with open("/proc/self/maps") as f:
        mapped = sum(1 for line in f if line.rstrip().endswith({path!r}))
    print(json.dumps(dict(errors=sorted(errors), mapped=mapped)))
"""


@pytest.mark.parametrize("corruption", ["mutex_kind", "counters"])
def test_a_refused_open_leaves_nothing_mapped(name, corruption):
    from segment_layout import field

    data = bytearray(real_segment_bytes([b"an item"]))
    if corruption == "mutex_kind":  # refused by lock(), after the mapping
        kind = field("segment.mutex") + 16  # glibc's pthread_mutex_t.__data.__kind
        data[kind:kind + 4] = (0x7777).to_bytes(4, "little")
    else:  # refused by the counters' check, after the mapping
        head = field("counters.head")
        data[head:head + 8] = (1 << 20).to_bytes(8, "little")
    path = write_segment_file(name, bytes(data))
    r = run_child(MAPPINGS_AFTER_REFUSED_OPENS.format(name=name, path=path))
    assert r["errors"] == ["SegmentCorruptError"], r
    assert r["mapped"] == 0, f"{r['mapped']} mappings of the refused segment left behind"


def test_a_wrong_sized_file_is_refused_before_any_of_it_is_populated(name):
    header = real_segment_bytes([b"an item"])
    path = write_segment_file(name, header)
    os.truncate(path, 256 << 20)  # sparse: the header says a 64 KiB queue
    before = os.stat(path).st_blocks
    r = run_child(OPEN_AND_GET.format(name=name))
    assert r["result"] == "SegmentCorruptError" and "sizes are inconsistent" in r["msg"], r
    grown = (os.stat(path).st_blocks - before) * 512
    assert grown < (1 << 20), f"the refused open populated {grown >> 20} MiB of the file"


def test_detach_never_removes_a_newer_queue_that_took_the_name(name):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    old = SageQueue(name)
    os.unlink(segment_file(name))  # removed from outside: rm, logind's RemoveIPC, an admin
    newer = SageQueue(name)
    newer.put("the newer queue's item")
    newer_inode = os.stat(segment_file(name)).st_ino
    try:
        old.detach()  # the last user of the old segment
        assert os.stat(segment_file(name)).st_ino == newer_inode, "the old queue's detach removed the newer one"
        old_again = SageQueue.open(name)
        assert old_again.get(timeout=1) == "the newer queue's item"
        old_again.detach()
    finally:
        newer.destroy()


FORK_THEN_PARENT_DETACHES = """
    import json, os, time
    # Registered before sage_queue's own hook, so it runs first in the child: the parent
    # detaches while the child has not run a line of the queue's code yet.
    os.register_at_fork(after_in_child=lambda: time.sleep(0.5))
    from sage_ext.sage_queue.python.sage_queue import SageQueue
    q = SageQueue({name!r})
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        there = os.path.exists({path!r})
        q.put("from the child")
        os.write(w, json.dumps(dict(there=there)).encode())
        os._exit(0)  # leaves without detaching
    os.close(w)
    q.detach()
    child = json.loads(os.read(r, 1000).decode())
    os.waitpid(pid, 0)
    print(json.dumps(dict(child, left=os.path.exists({path!r}))))
"""


def test_a_forked_child_counts_as_a_user_from_the_fork_and_a_segment_left_by_dead_users_goes_at_next_open(name):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    path = segment_file(name)
    r = run_child(FORK_THEN_PARENT_DETACHES.format(name=name, path=path))
    assert r["there"], "the parent's detach removed the queue while its forked child was using it"
    # The child left through os._exit: the segment outlived every user...
    assert r["left"]
    # ...and goes at the next open by name: open() finds no queue, the constructor a fresh one.
    with pytest.raises(FileNotFoundError, match="exited without detaching"):
        SageQueue.open(name)
    assert not os.path.exists(path)
    fresh = SageQueue(name)
    try:
        assert fresh.qsize() == 0 and fresh.stats().puts == 0
    finally:
        fresh.destroy()


def test_a_dead_producers_record_is_abandoned_even_when_its_pid_was_reused(name):
    """A reused pid is not the dead process: (pid, start time) tells them apart."""
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    from segment_layout import SegmentView

    q = SageQueue(name, capacity_bytes=64 * 1024)
    view = SegmentView(name)
    try:
        q.put("the dead producer's, never committed")
        q.put("the next item")
        first = q.info()["head"]
        # The first record as a producer that died mid-copy leaves it, with a pid that a live
        # process (this one's parent) holds now, and a start time that is not that process's.
        view.put(view.record(first, "state"), "<I", 1)  # reserved
        view.put(view.record(first, "holder"), "<i", os.getppid())
        view.put(view.record(first, "holder_start"), "<I", 12345)
        view.put(view.record(first, "stamp_ns"), "<Q", 0)  # held for long
        assert q.get(timeout=scaled(2)) == "the next item"
        assert q.stats().abandoned_records == 1
    finally:
        view.close()
        q.destroy()


def test_a_dead_consumers_slot_is_written_off_even_when_its_pid_was_reused(name):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    from segment_layout import SegmentView, slot_field

    q = SageQueue(name)
    q.put("taken, never task_done")
    script = f"""
        import json, os
        from sage_ext.sage_queue.python.sage_queue import SageQueue
        q = SageQueue.open({name!r})
        q.get(timeout=5)
        print(json.dumps(dict(pid=os.getpid())), flush=True)  # os._exit flushes nothing
        os._exit(0)
    """
    dead = run_child(script)["pid"]
    view = SegmentView(name)
    try:
        (slot,) = view.slots_of(dead)
        view.put(slot_field(slot, "pid"), "<i", os.getppid())  # the pid, now someone else's
        assert q.join(timeout=scaled(3)), "join() waited for a dead consumer whose pid was reused"
        assert q.stats().written_off_tasks == 1
    finally:
        view.close()
        q.destroy()


OTHER_NAMESPACE_USER = """
    import os, sys, time
    from sage_ext.sage_queue.python.sage_queue import SageQueue
    q = SageQueue.open({name!r})
    q.get(timeout=5)  # holds a task, never done
    print("attached", os.getpid(), flush=True)
    sys.stdin.readline()  # until told to go
    q.detach()
"""


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare(1) and root for a new pid namespace")
def test_a_user_in_another_pid_namespace_is_unknown_never_dead(name):
    from sage_ext.sage_queue.python import sage_queue_manager as manager
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue(name)
    q.put("for the other namespace")
    # sh stays pid 1 of the new namespace; python is another pid there, whatever it means here.
    script = textwrap.dedent(OTHER_NAMESPACE_USER.format(name=name))
    child = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
                              f'{sys.executable} -c "$0"; true', script],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        line = child.stdout.readline()
        assert line.startswith("attached"), line
        stats = q.stats()
        assert len(stats.unknown_pids) == 1 and not stats.dead_pids, stats
        assert not q.join(timeout=0.3), "the other namespace's task was written off as dead"
        q.detach()  # not the last user: the other namespace's is still there
        assert os.path.exists(segment_file(name))
        assert manager.cleanup(min_age=0, names=[name]) == []
        assert os.path.exists(segment_file(name)), "cleanup removed a queue in use in another namespace"
    finally:
        child.communicate("go\n", timeout=scaled(20))
    assert not os.path.exists(segment_file(name)), "the last user's detach did not remove the queue"


def test_a_segment_marked_removed_whose_name_survived_is_removed_by_the_next_open(name):
    """Its last user marks a segment removed, then removes the name: one that died in
    between (or a stray write of the mark) left a name that no open may trip on forever."""
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    from segment_layout import SegmentView, field

    q = SageQueue(name)
    q.put("of the old segment")
    view = SegmentView(name)
    view.put(field("segment.unlinked"), "<I", 1)
    view.close()
    q.detach()  # sees the mark: leaves the name alone
    assert os.path.exists(segment_file(name))
    fresh = SageQueue(name)
    try:
        assert fresh.qsize() == 0 and fresh.stats().puts == 0
    finally:
        fresh.destroy()
    assert not os.path.exists(segment_file(name))
