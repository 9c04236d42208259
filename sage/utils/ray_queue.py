"""ray_queue: a queue on Ray, for tasks and actors on several machines.

A named async actor holds the items; every call, single or batch, is one actor
call. Unlike ray.util.queue, put_many/get_many block and time out like put/get, so
a batch costs one round trip instead of one per item. The RayQueue handle pickles
into Ray tasks and actors (and through plain pickle) as a reference to the actor.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import uuid

import ray

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

__all__ = ["RayQueue", "ensure_ray", "ACTOR_NAME_PREFIX"]

ACTOR_NAME_PREFIX = "sage-queue:"
_OK, _TIMEOUT, _CLOSED = 0, 1, 2


# Ray's start-up lines ("Started a local Ray instance", ...) are INFO: below this level
# they stay out of the caller's terminal; `sage --verbose` lowers it.
RAY_LOGGING_LEVEL = logging.ERROR  # start-up warnings (a small /dev/shm in Docker, say) are chatter to a queue user


def ensure_ray(address: str | None = None, namespace: str = "sage") -> None:
    """Join ``address``, or start a local Ray on loopback, unless Ray is already up."""
    if ray.is_initialized():
        return
    options = dict(namespace=namespace, include_dashboard=False, log_to_driver=False,
                   logging_level=RAY_LOGGING_LEVEL)
    if address:
        ray.init(address=address, **options)
    else:
        # "local": a cluster of our own, never one another process left running (Ray's
        # default without an address joins the last cluster started on this machine).
        # On 127.0.0.1: never bind the machine's network address.
        ray.init(address="local", _node_ip_address="127.0.0.1", **options)


@ray.remote(num_cpus=0, max_concurrency=10_000)
class _QueueActor:
    """Holds one queue's items; async so blocked calls do not hold up the others."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.items: collections.deque = collections.deque()
        self.closed = False
        self.puts = self.gets = self.unfinished = 0
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created on the actor's event loop
            self._changed = asyncio.Condition()
        return self._changed

    async def _wait(self, ready, timeout: float | None) -> bool:
        changed = self._condition()
        predicate = lambda: self.closed or ready()  # noqa: E731
        if predicate():
            return True
        if timeout == 0:
            return False
        try:
            await asyncio.wait_for(changed.wait_for(predicate), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def put_many(self, items: list, timeout: float | None) -> int:
        changed = self._condition()
        async with changed:
            room = lambda: not self.maxsize or len(self.items) + len(items) <= self.maxsize  # noqa: E731
            if self.closed:
                return _CLOSED
            if not await self._wait(room, timeout):
                return _TIMEOUT
            if self.closed:
                return _CLOSED
            self.items.extend(items)
            self.puts += len(items)
            self.unfinished += len(items)
            changed.notify_all()
            return _OK

    async def get_many(self, max_items: int, timeout: float | None):
        changed = self._condition()
        async with changed:
            if not await self._wait(lambda: bool(self.items), timeout):
                return _TIMEOUT, []
            if not self.items:
                return _CLOSED, []
            count = min(max_items, len(self.items))
            got = [self.items.popleft() for _ in range(count)]
            self.gets += count
            changed.notify_all()
            return _OK, got

    async def task_done(self) -> bool:
        changed = self._condition()
        async with changed:
            if self.unfinished == 0:
                return False
            self.unfinished -= 1
            changed.notify_all()
            return True

    async def join(self, timeout: float | None) -> bool:
        changed = self._condition()
        async with changed:
            try:
                await asyncio.wait_for(changed.wait_for(lambda: self.unfinished == 0), timeout)
            except asyncio.TimeoutError:
                return False
            return True

    async def close(self) -> None:
        changed = self._condition()
        async with changed:
            self.closed = True
            changed.notify_all()

    def state(self) -> dict:
        return dict(items=len(self.items), maxsize=self.maxsize, closed=self.closed,
                    puts=self.puts, gets=self.gets, unfinished_tasks=self.unfinished)


class RayQueue:
    """The SAGE queue surface over a named Ray actor."""

    backend = "ray_queue"

    def __init__(self, name: str | None = None, maxsize: int = 0, *,
                 namespace: str = "sage", address: str | None = None,
                 put_timeout: float | None = None, get_timeout: float | None = None, _actor=None):
        check_maxsize(maxsize)
        #: what put / get wait when the caller passes no timeout (None: without limit)
        self.put_timeout = check_default_timeout(put_timeout, "put_timeout")
        self.get_timeout = check_default_timeout(get_timeout, "get_timeout")
        self.name = name or f"ray-{uuid.uuid4().hex[:12]}"
        self.namespace = namespace
        if _actor is None:
            ensure_ray(address, namespace)
            _actor = _QueueActor.options(
                name=ACTOR_NAME_PREFIX + self.name, namespace=namespace, get_if_exists=True
            ).remote(maxsize)
            existing = ray.get(_actor.state.remote())["maxsize"]
            if maxsize and existing != maxsize:
                raise ValueError(f"ray_queue {self.name!r} exists with maxsize={existing}, not {maxsize}")
            maxsize = existing
        self.maxsize = maxsize
        self._actor = _actor

    # -- queue.Queue surface -------------------------------------------------

    def put(self, item, block: bool = True, timeout: float | None = UNSET) -> None:
        self._put([item], effective_timeout(block, timeout, self.put_timeout))

    def get(self, block: bool = True, timeout: float | None = UNSET):
        return self._get(1, effective_timeout(block, timeout, self.get_timeout))[0]

    def put_nowait(self, item) -> None:
        self._put([item], 0.0)

    def get_nowait(self):
        return self._get(1, 0.0)[0]

    def put_many(self, items, block: bool = True, timeout: float | None = UNSET) -> None:
        """Put all items in one actor call: all of them or none (queue.Full)."""
        items = list(items)
        seconds = effective_timeout(block, timeout, self.put_timeout)
        check_batch(len(items), self.maxsize, self.name)
        self._put(items, seconds)

    def get_many(self, max_items: int = 64, block: bool = True,
                 timeout: float | None = UNSET) -> list:
        """Take 1..max_items items in one actor call, waiting as get() does for the first."""
        seconds = effective_timeout(block, timeout, self.get_timeout)
        return self._get(check_max_items(max_items), seconds)

    def qsize(self) -> int:
        return self._state()["items"]

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return bool(self.maxsize) and self.qsize() >= self.maxsize

    def task_done(self) -> None:
        if not ray.get(self._actor.task_done.remote()):
            raise ValueError("task_done() called too many times")

    def join(self, timeout: float | None = None) -> bool:
        return ray.get(self._actor.join.remote(check_timeout(timeout)))

    def close(self) -> None:
        ray.get(self._actor.close.remote())

    def destroy(self) -> None:
        """Close the queue and end its actor."""
        self.close()
        ray.kill(self._actor)

    @property
    def closed(self) -> bool:
        return self._state()["closed"]

    def stats(self) -> BackendStats:
        return BackendStats(name=self.name, backend=self.backend, **self._state())

    # -- plumbing --------------------------------------------------------------

    def _state(self) -> dict:
        return ray.get(self._actor.state.remote())

    def _put(self, items: list, timeout: float | None) -> None:
        status = ray.get(self._actor.put_many.remote(items, timeout))
        if status == _TIMEOUT:
            raise queue.Full
        if status == _CLOSED:
            raise QueueClosed("queue is closed")

    def _get(self, max_items: int, timeout: float | None) -> list:
        status, items = ray.get(self._actor.get_many.remote(max_items, timeout))
        if status == _TIMEOUT:
            raise queue.Empty
        if status == _CLOSED:
            raise QueueClosed("queue is closed and empty")
        return items

    def __reduce__(self):
        return (_rebuild, (self.name, self.maxsize, self.namespace, self._actor,
                           self.put_timeout, self.get_timeout))

    def __repr__(self) -> str:
        return f"RayQueue(name={self.name!r}, maxsize={self.maxsize})"


def _rebuild(name, maxsize, namespace, actor, put_timeout=None, get_timeout=None) -> RayQueue:
    return RayQueue(name, maxsize, namespace=namespace, put_timeout=put_timeout,
                    get_timeout=get_timeout, _actor=actor)
