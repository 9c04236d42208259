"""The queue contract: the surface every backend offers, how each refuses bad arguments,
the stats fields all of them report, and how a queue's default timeouts apply.

python_queue and ray_queue call the checks below; sage_queue makes the same checks in
C++ with the same messages (tests/test_queue_contract.py holds all three to one table).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "QueueProtocol",
    "BackendStats",
    "UNSET",
    "TIMEOUT_MESSAGE",
    "MAX_ITEMS_MESSAGE",
    "check_timeout",
    "check_default_timeout",
    "check_maxsize",
    "check_max_items",
    "check_batch",
    "effective_timeout",
]

# The messages sage_queue's C++ raises too: keep both sides the same.
TIMEOUT_MESSAGE = "'timeout' must be a non-negative number"
MAX_ITEMS_MESSAGE = "max_items must be >= 1"


class _Unset:
    """The default of a timeout argument: "the caller passed none", as opposed to None
    ("wait without limit"). The queue's configured default applies only then."""

    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self):
        return "UNSET"  # one object, also after a round trip through pickle


UNSET: Any = _Unset()


@dataclasses.dataclass(frozen=True)
class BackendStats:
    """The counters every backend's stats() reports (sage_queue's QueueStats adds its own)."""

    name: str
    backend: str  #: "sage_queue", "ray_queue" or "python_queue"
    items: int  #: items put and not yet taken
    maxsize: int  #: item limit, 0 for none
    closed: bool  #: close() was called
    puts: int  #: items ever put
    gets: int  #: items ever taken
    unfinished_tasks: int  #: puts not yet matched by task_done


@runtime_checkable
class QueueProtocol(Protocol):
    """What create_queue() returns, whatever the backend: queue.Queue's surface plus batches,
    close() and stats(). A timeout left out takes the queue's put_timeout / get_timeout
    (from the configuration); ``timeout=None`` waits without limit."""

    name: str
    backend: str
    maxsize: int
    put_timeout: float | None
    get_timeout: float | None

    def put(self, item: Any, block: bool = True, timeout: float | None = UNSET) -> None: ...
    def get(self, block: bool = True, timeout: float | None = UNSET) -> Any: ...
    def put_nowait(self, item: Any) -> None: ...
    def get_nowait(self) -> Any: ...
    def put_many(self, items: Iterable[Any], block: bool = True,
                 timeout: float | None = UNSET) -> None: ...
    def get_many(self, max_items: int = 64, block: bool = True,
                 timeout: float | None = UNSET) -> list: ...
    def qsize(self) -> int: ...
    def empty(self) -> bool: ...
    def full(self) -> bool: ...
    def task_done(self) -> None: ...
    def join(self, timeout: float | None = None) -> bool: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    def stats(self) -> BackendStats: ...


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` as seconds, or None; ValueError for a negative or NaN one."""
    if timeout is None:
        return None
    seconds = float(timeout)  # TypeError for a non-number, as the stdlib's Condition.wait
    if seconds < 0 or math.isnan(seconds):
        raise ValueError(TIMEOUT_MESSAGE)
    return seconds


def check_default_timeout(timeout: float | None, what: str) -> float | None:
    """A queue's put_timeout / get_timeout; the error names which one."""
    try:
        return check_timeout(timeout)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be seconds >= 0 or None, got {timeout!r}") from None


def effective_timeout(block: bool, timeout: float | None, default: float | None) -> float | None:
    """The seconds a blocking call may wait: 0 without ``block``, the caller's timeout if it
    passed one (None included), else the queue's default."""
    if not block:
        return 0.0
    return check_timeout(default if timeout is UNSET else timeout)


def check_maxsize(maxsize: int) -> int:
    if maxsize < 0:
        raise ValueError(f"maxsize must be >= 0, got {maxsize}")
    return maxsize


def check_max_items(max_items: int) -> int:
    if max_items < 1:
        raise ValueError(MAX_ITEMS_MESSAGE)
    return max_items


def check_batch(count: int, maxsize: int, name: str) -> None:
    """A batch larger than maxsize could never fit: refuse it rather than wait forever."""
    if maxsize and count > maxsize:
        raise ValueError(f"batch of {count} items exceeds maxsize={maxsize} of queue '{name}'")
