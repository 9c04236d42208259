"""Helpers of the runtime tests: both modes, results out of task processes, leftover checks."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from conftest import requires_native

# Every runtime test runs in both modes; process mode needs the native queue (skipped only
# where it is not built: the minimal profile).
MODES = ["thread", pytest.param("process", marks=requires_native)]


class Collector:
    """A sink target that works in both modes: a list (threads share it) or a SageQueue
    the task processes put into and the test drains."""

    def __init__(self, mode: str):
        self.mode = mode
        if mode == "process":
            from sage.utils import create_queue

            # 4 MiB, not the default: every ring of two test workers fits Docker's 64 MB /dev/shm
            self._queue = create_queue("sage_queue", name=f"t-collect-{uuid.uuid4().hex[:12]}",
                                       capacity_bytes=4 << 20)
        else:
            self._items: list = []
            self._lock = threading.Lock()
        self._taken: list = []

    def __call__(self, item) -> None:
        if self.mode == "process":
            self._queue.put(item)
        else:
            with self._lock:
                self._items.append(item)

    def items(self) -> list:
        """Everything collected so far (call after the job ended)."""
        if self.mode == "process":
            import queue

            while True:
                try:
                    self._taken.extend(self._queue.get_many(1024, False))
                except queue.Empty:
                    break
            return list(self._taken)
        with self._lock:
            return list(self._items)

    def close(self) -> None:
        if self.mode == "process":
            self._queue.destroy()


def children_of_this_process() -> set:
    me = str(os.getpid())
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            found.add(int(entry))
    return found


def our_segments() -> set:
    """sage_queue segments of jobs started by this process (none where the native module is
    not built: nothing can have made one)."""
    try:
        from sage_ext.sage_queue.python.sage_queue import SEGMENT_DIR, SEGMENT_PREFIX
    except ImportError:
        return set()
    prefix = f"{SEGMENT_PREFIX}sage-{os.getpid()}-"
    return {name for name in os.listdir(SEGMENT_DIR) if name.startswith(prefix)}


def sage_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("sage-")]


def assert_nothing_left(children_before: frozenset = frozenset()) -> None:
    """No runtime thread, no child but those that were there before (other tests of this
    pytest worker may own some: a Ray cluster, say), no segment of a job."""
    assert sage_threads() == [], "threads of the runtime are still running"
    left = children_of_this_process() - children_before
    assert left == set(), f"child processes are left: {sorted(left)}"
    assert our_segments() == set(), "/dev/shm segments of a job are left"


# Fixtures: import them into a test module (``from runtime_support import mode, ...``).


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


@pytest.fixture
def collect(mode):
    made = []

    def make() -> Collector:
        made.append(Collector(mode))
        return made[-1]

    yield make
    for collector in made:
        collector.close()


@pytest.fixture(autouse=False)
def no_leftovers():
    """After the test, whatever way it ended: no runtime thread, child or segment is left."""
    before = frozenset(children_of_this_process())
    yield
    assert_nothing_left(before)
