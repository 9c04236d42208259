"""python_queue: the standard library's queue.Queue with the SAGE queue surface.

For threads of one process. Adds put_many/get_many under one lock, close() with the
semantics of Python 3.13's shutdown(), stats(), and names: queues created with the
same name in one process are the same queue. It refuses to be pickled, because a
copy in another process would silently be a different queue.
"""

from __future__ import annotations

import queue
import threading
import time
import weakref

from .errors import QueueClosed
from .queue_contract import (
    UNSET,
    BackendStats,
    check_batch,
    check_default_timeout,
    check_max_items,
    check_maxsize,
    check_timeout,
    effective_timeout,
)

__all__ = ["PythonQueue", "BackendStats", "QueueClosed"]


def _deadline(seconds: float | None) -> float | None:
    """None = wait forever, else the monotonic time to give up."""
    return None if seconds is None else time.monotonic() + seconds


class PythonQueue(queue.Queue):
    """queue.Queue plus batches, close(), stats() and a process-local name."""

    _by_name: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
    _by_name_lock = threading.Lock()

    backend = "python_queue"

    @classmethod
    def named(cls, name: str | None, maxsize: int = 0, *, put_timeout: float | None = None,
              get_timeout: float | None = None) -> PythonQueue:
        """The queue of that name in this process, created on first use (one object, so
        its sizes and default timeouts are those it was created with)."""
        if name is None:
            return cls(maxsize=maxsize, put_timeout=put_timeout, get_timeout=get_timeout)
        with cls._by_name_lock:
            existing = cls._by_name.get(name)
            if existing is not None:
                if maxsize and existing.maxsize != maxsize:
                    raise ValueError(
                        f"python_queue {name!r} exists with maxsize={existing.maxsize}, not {maxsize}"
                    )
                if (put_timeout, get_timeout) != (existing.put_timeout, existing.get_timeout):
                    raise ValueError(
                        f"python_queue {name!r} exists with put_timeout={existing.put_timeout}, "
                        f"get_timeout={existing.get_timeout}, not {put_timeout}, {get_timeout}")
                return existing
            made = cls(maxsize=maxsize, name=name, put_timeout=put_timeout,
                       get_timeout=get_timeout)
            cls._by_name[name] = made
            return made

    def __init__(self, maxsize: int = 0, name: str | None = None, *,
                 put_timeout: float | None = None, get_timeout: float | None = None):
        super().__init__(check_maxsize(maxsize))
        self.name = name or f"python-{id(self):x}"
        #: what put / get wait when the caller passes no timeout (None: without limit)
        self.put_timeout = check_default_timeout(put_timeout, "put_timeout")
        self.get_timeout = check_default_timeout(get_timeout, "get_timeout")
        self._closed = False
        self._puts = 0
        self._gets = 0

    # -- waiting, shared by single and batch calls -------------------------------

    def _wait(self, condition: threading.Condition, ready, deadline, error):
        while not ready():
            if self._closed:
                raise QueueClosed("queue is closed")
            if deadline is None:
                condition.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise error
            condition.wait(remaining)

    # put and get are put_many / get_many of one item, written out: the batch path's list
    # and predicate cost about half of queue.Queue's speed on small items.
    def put(self, item, block: bool = True, timeout: float | None = UNSET) -> None:
        deadline = _deadline(effective_timeout(block, timeout, self.put_timeout))
        with self.not_full:
            if self._closed:
                raise QueueClosed("queue is closed")
            if self.maxsize and self._qsize() >= self.maxsize:
                room = lambda: self._qsize() < self.maxsize  # noqa: E731
                self._wait(self.not_full, room, deadline, queue.Full())
            self._put(item)
            self.unfinished_tasks += 1
            self._puts += 1
            self.not_empty.notify()

    def get(self, block: bool = True, timeout: float | None = UNSET):
        deadline = _deadline(effective_timeout(block, timeout, self.get_timeout))
        with self.not_empty:
            if not self._qsize():
                self._wait(self.not_empty, self._qsize, deadline, queue.Empty())
            item = self._get()
            self._gets += 1
            self.not_full.notify()
            return item

    def put_nowait(self, item) -> None:
        self.put(item, False)

    def get_nowait(self):
        return self.get(False)

    def put_many(self, items, block: bool = True, timeout: float | None = UNSET) -> None:
        """Put all items under one lock: all of them or none (queue.Full)."""
        items = list(items)
        deadline = _deadline(effective_timeout(block, timeout, self.put_timeout))
        check_batch(len(items), self.maxsize, self.name)
        with self.not_full:
            if self._closed:
                raise QueueClosed("queue is closed")
            if self.maxsize:
                room = lambda: self.maxsize - self._qsize() >= len(items)  # noqa: E731
                self._wait(self.not_full, room, deadline, queue.Full())
            self.queue.extend(items)  # queue.Queue's _put, for the whole batch at once
            self.unfinished_tasks += len(items)
            self._puts += len(items)
            self.not_empty.notify(len(items))

    def get_many(self, max_items: int = 64, block: bool = True,
                 timeout: float | None = UNSET) -> list:
        """Take 1..max_items items, waiting as get() does for the first."""
        deadline = _deadline(effective_timeout(block, timeout, self.get_timeout))
        check_max_items(max_items)
        with self.not_empty:
            self._wait(self.not_empty, self._qsize, deadline, queue.Empty())
            count = min(max_items, self._qsize())
            take = self.queue.popleft  # queue.Queue's _get
            items = [take() for _ in range(count)]
            self._gets += count
            self.not_full.notify(count)
            return items

    def join(self, timeout: float | None = None) -> bool:
        """Block until every item is task_done'd; False if ``timeout`` expired."""
        deadline = _deadline(check_timeout(timeout))
        with self.all_tasks_done:
            while self.unfinished_tasks:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self.all_tasks_done.wait(remaining)
            return True

    def close(self) -> None:
        """Puts raise QueueClosed from now on; gets drain, then raise it. Wakes every waiter."""
        with self.mutex:
            self._closed = True
            self.not_empty.notify_all()
            self.not_full.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> BackendStats:
        with self.mutex:
            return BackendStats(
                name=self.name, backend=self.backend, items=self._qsize(), maxsize=self.maxsize,
                closed=self._closed, puts=self._puts, gets=self._gets,
                unfinished_tasks=self.unfinished_tasks,
            )

    def __reduce__(self):
        raise TypeError(
            f"python_queue {self.name!r} cannot be sent to another process: it lives in this "
            "process's memory. Use create_queue('sage_queue') (same machine) or "
            "create_queue('ray_queue') (across machines)."
        )

    def __repr__(self) -> str:
        return f"PythonQueue(name={self.name!r}, maxsize={self.maxsize})"

