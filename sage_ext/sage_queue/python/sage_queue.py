"""SageQueue: a queue.Queue for processes on one machine, in POSIX shared memory.

Any process that knows the name attaches to the same queue; a SageQueue sent to
another process (pickled) attaches the receiver to the same segment. Items are
encoded in the caller, so a bad item fails in put(), never later: bytes and
bytearray travel raw; small trees of None, bool, int, float, str, bytes, list,
tuple and dict go through the native item codec (several times cheaper than
pickle, and decoded exactly as pickle would); everything else is pickled
(protocol 5), with out-of-band buffers (numpy arrays, PickleBuffer) copied once in
and once out.
"""

from __future__ import annotations

import atexit
import dataclasses
import multiprocessing.util
import os
import queue
import secrets
import weakref

__all__ = [
    "SageQueue",
    "QueueClosed",
    "QueueStats",
    "SegmentCorruptError",
    "SegmentUntrustedError",
    "DEFAULT_CAPACITY_BYTES",
    "DEFAULT_BATCH_BYTES",
    "SEGMENT_DIR",
    "SEGMENT_PREFIX",
]

from sage.utils.install_hint import native_build_hint
from sage.utils.queue_contract import UNSET, BackendStats, check_default_timeout, check_maxsize

from .errors import QueueClosed

try:
    from . import _native
except ImportError as exc:  # the minimal profile has no native build
    raise ImportError(
        f"the native sage_queue extension is not built; {native_build_hint()} "
        f"(import error: {exc})"
    ) from exc

# Shared facts come from the native core, their one source.
DEFAULT_CAPACITY_BYTES = _native.DEFAULT_CAPACITY_BYTES
DEFAULT_BATCH_BYTES = _native.DEFAULT_BATCH_BYTES  # get_many stops adding items past this many payload bytes
SEGMENT_DIR = _native.SEGMENT_DIR
SEGMENT_PREFIX = _native.SEGMENT_PREFIX  # a queue's file is SEGMENT_DIR/SEGMENT_PREFIX<name>

SegmentCorruptError = _native.SegmentCorruptError
# A file at the queue's name that is not a regular file of ours with mode 0600: whoever can
# write a segment can run code in its consumers (pickle), so only its owner may open it.
SegmentUntrustedError = _native.SegmentUntrustedError


_native._set_support(queue.Empty, queue.Full, QueueClosed)


@dataclasses.dataclass(frozen=True)
class QueueStats(BackendStats):
    """Counters shared by every process attached to one queue: the fields every backend
    reports (BackendStats), then sage_queue's own."""

    capacity_bytes: int  #: size of the ring
    used_bytes: int  #: ring bytes held by records not yet freed
    persistent: bool  #: the segment outlives its last user
    attached_pids: tuple[int, ...]  #: live processes attached
    dead_pids: tuple[int, ...]  #: attached processes that died without detaching
    unknown_pids: tuple[int, ...]  #: attached from another pid namespace: alive as far as we know
    waiting_getters: int  #: callers asleep in get/get_many, waiting for an item
    waiting_putters: int  #: callers asleep in put/put_many, waiting for room
    waiting_joiners: int  #: callers asleep in join
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
            backend="sage_queue",
            items=info["items"],
            maxsize=info["maxsize"],
            capacity_bytes=info["capacity_bytes"],
            used_bytes=info["used_bytes"],
            unfinished_tasks=info["unfinished_tasks"],
            closed=info["closed"],
            persistent=info["persistent"],
            attached_pids=tuple(p for p, state in info["attached"] if state == "alive"),
            dead_pids=tuple(p for p, state in info["attached"] if state == "dead"),
            unknown_pids=tuple(p for p, state in info["attached"] if state == "unknown"),
            waiting_getters=info["waiters"]["get"],
            waiting_putters=info["waiters"]["put"],
            waiting_joiners=info["waiters"]["join"],
            **{k: s[k] for k in (
                "puts", "gets", "bytes_put", "bytes_got", "abandoned_records",
                "reclaimed_records", "written_off_tasks", "lock_recoveries")},
        )


# Handles of this process: a forked child counts as a user from the fork on (the parent
# reserves its slot before forking), and they are detached at exit so the last process
# out removes the segment.
_live_handles: weakref.WeakSet = weakref.WeakSet()


def _before_fork() -> None:
    for handle in list(_live_handles):
        handle.before_fork()


def _after_fork_in_parent() -> None:
    for handle in list(_live_handles):
        handle.after_fork_in_parent()


def _after_fork_in_child() -> None:
    for handle in list(_live_handles):
        handle.after_fork_in_child()


def _detach_all() -> None:
    for handle in list(_live_handles):
        handle.detach()


def _register_exit_hook(_owner=None) -> None:
    # multiprocessing children leave through os._exit, skipping atexit but running these.
    multiprocessing.util.Finalize(None, _detach_all, exitpriority=0)


class _ExitHookOwner:
    """Anchor for multiprocessing.util.register_after_fork (it keeps a weak reference)."""


_exit_hook_owner = _ExitHookOwner()
os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)
atexit.register(_detach_all)
_register_exit_hook()
multiprocessing.util.register_after_fork(_exit_hook_owner, _register_exit_hook)


class SageQueue(_native.ShmQueue):
    """A multi-producer, multi-consumer queue shared by processes on one machine.

    ``SageQueue(name)`` opens the queue of that name or creates it; ``SageQueue.open(name)``
    only attaches. ``maxsize`` counts items as in ``queue.Queue`` (0 = bounded only by
    ``capacity_bytes``, the size of the shared ring). The segment disappears when the
    last attached process detaches, unless ``persistent=True``.

    ``put_timeout`` / ``get_timeout``: what put/put_many and get/get_many wait when the
    caller passes no timeout (None: without limit). They belong to this handle, and
    travel with it when it is pickled.
    """

    backend = "sage_queue"  # the queue layer's name for this backend
    put_timeout: float | None = None
    get_timeout: float | None = None

    def __init__(
        self,
        name: str | None = None,
        maxsize: int = 0,
        capacity_bytes: int | None = None,
        persistent: bool = False,
        *,
        put_timeout: float | None = None,
        get_timeout: float | None = None,
        _mode: str = "open_or_create",
    ):
        if name is None:
            name = f"anon-{os.getpid()}-{secrets.token_hex(6)}"
        if not isinstance(name, str):
            raise TypeError(f"queue name must be a str, not {type(name).__name__}")
        check_maxsize(maxsize)
        if capacity_bytes is not None and capacity_bytes <= 0:
            raise ValueError(f"capacity_bytes must be > 0, got {capacity_bytes}")
        put_timeout = check_default_timeout(put_timeout, "put_timeout")
        get_timeout = check_default_timeout(get_timeout, "get_timeout")
        super().__init__(name, capacity_bytes or 0, maxsize, persistent, _mode)
        if put_timeout is not None or get_timeout is not None:
            # Only a handle with default timeouts pays for Python-level put/get (about a
            # quarter of a small put/get pair); every other handle keeps the native calls.
            self.__class__ = _SageQueueWithTimeouts
            self.put_timeout, self.get_timeout = put_timeout, get_timeout
        _live_handles.add(self)

    @classmethod
    def open(cls, name: str, *, put_timeout: float | None = None,
             get_timeout: float | None = None) -> SageQueue:
        """Attach to an existing queue; FileNotFoundError if there is none of that name."""
        return cls(name, put_timeout=put_timeout, get_timeout=get_timeout, _mode="open_only")

    @classmethod
    def create(cls, name: str | None = None, **options) -> SageQueue:
        """Create a new queue; FileExistsError if the name is taken."""
        return cls(name, _mode="create_only", **options)

    # The queue.Queue surface and the batch calls are native (inherited):
    #   put(item, block=True, timeout=None), get(block=True, timeout=None),
    #   put_nowait(item), get_nowait(), qsize(), empty(), full(), task_done(),
    #   join(timeout=None) -> bool (False if timeout expired; tasks held by dead
    #   consumers are written off, see QueueStats.written_off_tasks),
    #   put_many(items, block=True, timeout=None): all items under one lock, all or none,
    #   get_many(max_items=64, block=True, timeout=None, max_bytes=16 MiB): 1..max_items.

    # -- lifecycle ---------------------------------------------------------------

    # close(): closes the queue for every process: puts raise QueueClosed, gets drain
    #   what is left, then raise it; blocked callers wake at once. The handle stays attached.
    # closed: whether it was closed, read from the shared flag without the lock (native);
    #   ValueError on a detached handle, as every call.

    def detach(self) -> None:
        """Release this handle; the last process to detach removes the segment."""
        _live_handles.discard(self)
        super().detach()

    def destroy(self) -> None:
        """Close the queue, remove its name now, and detach. Attached peers see it closed."""
        if self.attached:
            self.close()
            self.unlink()
        self.detach()

    def stats(self) -> QueueStats:
        return QueueStats.from_info(self.name, self.info())

    def __enter__(self) -> SageQueue:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def __reduce__(self):
        # Pickled as a reference: the receiver attaches to the same segment.
        if self.put_timeout is None and self.get_timeout is None:
            return (SageQueue.open, (self.name,))
        return (_open_with_timeouts, (self.name, self.put_timeout, self.get_timeout))

    def __repr__(self) -> str:
        if not self.attached:
            return f"SageQueue(name={self.name!r}, detached)"
        return f"SageQueue(name={self.name!r}, maxsize={self.maxsize}, capacity_bytes={self.capacity_bytes})"


_put, _get = _native.ShmQueue.put, _native.ShmQueue.get
_put_many, _get_many = _native.ShmQueue.put_many, _native.ShmQueue.get_many


class _SageQueueWithTimeouts(SageQueue):
    """A SageQueue handle whose put/get calls without a timeout wait its defaults."""

    def put(self, item, block: bool = True, timeout: float | None = UNSET) -> None:
        _put(self, item, block, self.put_timeout if timeout is UNSET else timeout)

    def get(self, block: bool = True, timeout: float | None = UNSET):
        return _get(self, block, self.get_timeout if timeout is UNSET else timeout)

    def put_many(self, items, block: bool = True, timeout: float | None = UNSET) -> None:
        _put_many(self, items, block, self.put_timeout if timeout is UNSET else timeout)

    def get_many(self, max_items: int = 64, block: bool = True, timeout: float | None = UNSET,
                 max_bytes: int = DEFAULT_BATCH_BYTES) -> list:
        return _get_many(self, max_items, block,
                         self.get_timeout if timeout is UNSET else timeout, max_bytes)


def _open_with_timeouts(name: str, put_timeout, get_timeout) -> SageQueue:
    return SageQueue.open(name, put_timeout=put_timeout, get_timeout=get_timeout)
