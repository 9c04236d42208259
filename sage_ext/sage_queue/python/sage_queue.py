"""SageQueue: a queue.Queue for processes on one machine, in POSIX shared memory.

Any process that knows the name attaches to the same queue; a SageQueue sent to
another process (pickled) attaches the receiver to the same segment. Items are
pickled (protocol 5) in the caller, so a bad item fails in put(), never later;
bytes and bytearray travel raw, and out-of-band buffers (numpy arrays, PickleBuffer)
are copied once in and once out.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import queue
import secrets
import weakref

__all__ = [
    "SageQueue",
    "QueueClosed",
    "QueueStats",
    "SegmentCorruptError",
    "DEFAULT_CAPACITY_BYTES",
    "DEFAULT_BATCH_BYTES",
    "SEGMENT_DIR",
    "SEGMENT_PREFIX",
]

try:
    from . import _native
except ImportError as exc:  # the minimal profile has no native build
    raise ImportError(
        "the native sage_queue extension is not built; run `python install.py --full` "
        f"(import error: {exc})"
    ) from exc

DEFAULT_CAPACITY_BYTES = 8 << 20
DEFAULT_BATCH_BYTES = 16 << 20  # get_many stops adding items past this many payload bytes
SEGMENT_DIR = "/dev/shm"
SEGMENT_PREFIX = "sage_queue."

SegmentCorruptError = _native.SegmentCorruptError


class QueueClosed(getattr(queue, "ShutDown", Exception)):
    """The queue was closed: put() always raises it, get() once the queue is empty."""


_native._set_support(queue.Empty, queue.Full, QueueClosed, pickle.loads)
_TAG_PICKLE = _native.TAG_PICKLE
_TAG_BYTES = _native.TAG_BYTES
_TAG_BYTEARRAY = _native.TAG_BYTEARRAY
_FOREVER = -1.0


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """Counters shared by every process attached to one queue."""

    name: str
    items: int  #: items put and not yet taken (qsize)
    maxsize: int  #: item limit, 0 for none
    capacity_bytes: int  #: size of the ring
    used_bytes: int  #: ring bytes held by records not yet freed
    unfinished_tasks: int  #: puts not yet matched by task_done
    closed: bool  #: close() was called
    persistent: bool  #: the segment outlives its last user
    attached_pids: tuple[int, ...]  #: live processes attached
    dead_pids: tuple[int, ...]  #: attached processes that died without detaching
    puts: int  #: items ever put
    gets: int  #: items ever taken
    bytes_put: int  #: payload bytes ever put
    bytes_got: int  #: payload bytes ever taken
    abandoned_records: int  #: reserved by a producer that died before committing: never delivered
    reclaimed_records: int  #: taken by a consumer that died while copying them out: lost with it
    written_off_tasks: int  #: unfinished tasks of dead consumers, dropped so join() returns
    lock_recoveries: int  #: lock holders that died inside a locked section (rolled back)

    @classmethod
    def from_info(cls, name: str, info: dict) -> QueueStats:
        s = info["stats"]
        return cls(
            name=name,
            items=info["items"],
            maxsize=info["maxsize"],
            capacity_bytes=info["capacity_bytes"],
            used_bytes=info["used_bytes"],
            unfinished_tasks=info["unfinished_tasks"],
            closed=info["closed"],
            persistent=info["persistent"],
            attached_pids=tuple(p for p, alive in info["attached"] if alive),
            dead_pids=tuple(p for p, alive in info["attached"] if not alive),
            **{k: s[k] for k in (
                "puts", "gets", "bytes_put", "bytes_got", "abandoned_records",
                "reclaimed_records", "written_off_tasks", "lock_recoveries")},
        )


def _timeout(block: bool, timeout: float | None) -> float:
    """The native timeout: 0 = do not block, -1 = forever, else seconds (stdlib meaning)."""
    if not block:
        return 0.0
    if timeout is None:
        return _FOREVER
    if timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return float(timeout)


def _encode(item):
    kind = type(item)
    if kind is bytes or kind is memoryview:
        return _TAG_BYTES, item, None
    if kind is bytearray:
        return _TAG_BYTEARRAY, item, None
    buffers = []
    data = pickle.dumps(item, protocol=5, buffer_callback=buffers.append)
    return _TAG_PICKLE, data, buffers or None


# Handles of this process, re-registered in a forked child so it counts as a user.
_live_handles: weakref.WeakSet = weakref.WeakSet()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        after_in_child=lambda: [h._native.after_fork_in_child() for h in list(_live_handles)]
    )


class SageQueue:
    """A multi-producer, multi-consumer queue shared by processes on one machine.

    ``SageQueue(name)`` opens the queue of that name or creates it; ``SageQueue.open(name)``
    only attaches. ``maxsize`` counts items as in ``queue.Queue`` (0 = bounded only by
    ``capacity_bytes``, the size of the shared ring). The segment disappears when the
    last attached process detaches, unless ``persistent=True``.
    """

    def __init__(
        self,
        name: str | None = None,
        maxsize: int = 0,
        capacity_bytes: int | None = None,
        persistent: bool = False,
        *,
        _mode: str = "open_or_create",
    ):
        if name is None:
            name = f"anon-{os.getpid()}-{secrets.token_hex(6)}"
        if not isinstance(name, str):
            raise TypeError(f"queue name must be a str, not {type(name).__name__}")
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        if capacity_bytes is not None and capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        self._native = _native.ShmQueue(name, capacity_bytes or 0, maxsize, persistent, _mode)
        self._name = name
        self._finalizer = weakref.finalize(self, self._native.detach)
        _live_handles.add(self)
        # Bound once: put/get are the hot path.
        self._put = self._native.put
        self._get = self._native.get

    @classmethod
    def open(cls, name: str) -> SageQueue:
        """Attach to an existing queue; FileNotFoundError if there is none of that name."""
        return cls(name, _mode="open_only")

    @classmethod
    def create(cls, name: str | None = None, **options) -> SageQueue:
        """Create a new queue; FileExistsError if the name is taken."""
        return cls(name, _mode="create_only", **options)

    # -- queue.Queue surface -------------------------------------------------

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        self._put(*_encode(item), _timeout(block, timeout))

    def get(self, block: bool = True, timeout: float | None = None):
        return self._get(_timeout(block, timeout))

    def put_nowait(self, item) -> None:
        self._put(*_encode(item), 0.0)

    def get_nowait(self):
        return self._get(0.0)

    def qsize(self) -> int:
        return self._native.qsize()

    def empty(self) -> bool:
        return self._native.qsize() == 0

    def full(self) -> bool:
        maxsize = self._native.maxsize
        return maxsize > 0 and self._native.qsize() >= maxsize

    def task_done(self) -> None:
        self._native.task_done(1)

    def join(self, timeout: float | None = None) -> bool:
        """Block until every item put has been task_done'd; False if ``timeout`` expired.

        Tasks held by consumers that died are written off (counted in
        ``stats().written_off_tasks``), so join() does not wait for the dead.
        """
        return self._native.join(_timeout(True, timeout))

    # -- batches ---------------------------------------------------------------

    def put_many(self, items, block: bool = True, timeout: float | None = None) -> None:
        """Put all items, in order, under one lock: all of them or none (queue.Full)."""
        records = [_encode(item) for item in items]
        self._native.put_many(records, _timeout(block, timeout))

    def get_many(
        self,
        max_items: int = 64,
        block: bool = True,
        timeout: float | None = None,
        max_bytes: int = DEFAULT_BATCH_BYTES,
    ) -> list:
        """Take 1..max_items items (stopping past max_bytes), waiting as get() does for the first."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        return self._native.get_many(max_items, max_bytes, _timeout(block, timeout))

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        """Close the queue for every process: puts raise QueueClosed, gets drain, then raise it.

        Blocked callers wake at once. This handle stays attached (see detach()).
        """
        self._native.close()

    def detach(self) -> None:
        """Release this handle; the last process to detach removes the segment."""
        _live_handles.discard(self)
        self._finalizer()

    def destroy(self) -> None:
        """Close the queue, remove its name now, and detach. Attached peers see it closed."""
        if self._native.attached:
            self._native.close()
            self._native.unlink()
        self.detach()

    def stats(self) -> QueueStats:
        return QueueStats.from_info(self._name, self._native.info())

    @property
    def name(self) -> str:
        return self._name

    @property
    def maxsize(self) -> int:
        return self._native.maxsize

    @property
    def capacity_bytes(self) -> int:
        return self._native.capacity_bytes

    @property
    def closed(self) -> bool:
        return self._native.info()["closed"]

    def __enter__(self) -> SageQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __reduce__(self):
        # Pickled as a reference: the receiver attaches to the same segment.
        return (SageQueue.open, (self._name,))

    def __repr__(self) -> str:
        state = "attached" if self._native.attached else "detached"
        return f"SageQueue(name={self._name!r}, maxsize={self.maxsize}, capacity_bytes={self.capacity_bytes}, {state})"
