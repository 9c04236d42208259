"""ServiceCaller: one caller's side of service calls (an operator instance or a service).

A request ``(caller_id, call_id, method, args, kwargs)`` goes to the service's request
queue; the answer ``(call_id, ok, value)`` comes back on this caller's own response queue,
read by one reader thread that resolves the matching Future. A call whose timeout passes
fails with TimeoutError and is forgotten, so its late answer is discarded, never given
to another call. Everything blocks on queues; nothing polls.

The reader never dies silently: a batch of replies it cannot read fails the calls waiting
then, and it reads on; should it end for any other reason, every waiting call fails and
later calls are refused, saying why.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future, InvalidStateError

from sage.utils import QueueClosed

from ..thread_signals import leave_signals_to_the_main_thread

__all__ = ["ServiceCaller", "ServiceProxies", "STOP_REQUEST"]

log = logging.getLogger("sage.runtime")
_CLOSE_JOIN_SECONDS = 5.0  # close(): the reader ends at once unless a done-callback hangs

STOP_REQUEST = None  # on a request queue: the service finishes what is before it, then ends
_WAKE = (-1, True, None)  # put on our own response queue: the reader looks at deadlines again


def _settle(future: Future, value, ok: bool = False) -> None:
    """Resolve a future unless its caller cancelled it meanwhile."""
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except InvalidStateError:
        pass


class _Pending:
    __slots__ = ("future", "deadline", "what")

    def __init__(self, future: Future, deadline: float | None, what: str):
        self.future = future
        self.deadline = deadline
        self.what = what


class ServiceCaller:
    def __init__(self, caller_id: int, response_queue, request_queues: dict, owner: str = ""):
        self.caller_id = caller_id
        self.owner = owner
        self._responses = response_queue
        self._requests = request_queues
        self._ids = itertools.count()
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._closed = False
        self._reader_deadline: float | None = None  # what the reader is waiting until
        self._reader_failure: str | None = None  # why the reader ended, if not by close()
        self.late_replies = 0  # answers that came after their call had timed out

    def submit(self, service: str, method: str, args: tuple, kwargs: dict,
               timeout: float | None = None) -> Future:
        """Send the request; the Future holds the result, the service's exception, or a
        TimeoutError once ``timeout`` seconds pass without an answer.

        Callbacks added with ``Future.add_done_callback`` run on this caller's reader
        thread: one that blocks holds up every other answer of this caller (and one that
        waits for another answer of this caller never gets it)."""
        request_queue = self._requests.get(service)
        if request_queue is None:
            known = ", ".join(sorted(self._requests)) or "none"
            raise KeyError(f"no service named {service!r} (registered: {known})")
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        future: Future = Future()
        call_id = next(self._ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        what = f"service {service!r} method {method!r}"
        if timeout is not None:
            what += f" (timeout {timeout:g} s)"
        with self._lock:
            if self._reader_failure is not None:
                raise RuntimeError(f"{what}: {self._reader_failure}")
            if self._closed:
                raise RuntimeError(f"{self.owner or 'this caller'} has finished; it cannot call {what}")
            self._pending[call_id] = _Pending(future, deadline, what)
            self._start_reader()
            wake = deadline is not None and (self._reader_deadline is None
                                             or deadline < self._reader_deadline)
        try:
            request_queue.put((self.caller_id, call_id, method, tuple(args), dict(kwargs)))
        except QueueClosed:
            self._forget(call_id)
            raise RuntimeError(f"{what}: the service has stopped") from None
        except BaseException:
            self._forget(call_id)
            raise
        if wake:
            self._responses.put(_WAKE)
        return future

    def call(self, service: str, method: str, args: tuple, kwargs: dict,
             timeout: float | None = None):
        """Block until the answer: its value, or the service's exception raised here."""
        return self.submit(service, method, args, kwargs, timeout).result()

    def _forget(self, call_id: int) -> None:
        with self._lock:
            self._pending.pop(call_id, None)

    def _start_reader(self) -> None:
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, daemon=True,
                                            name=f"sage-service-replies-{self.owner}")
            self._reader.start()

    def _next_deadline(self) -> float | None:
        deadlines = [p.deadline for p in self._pending.values() if p.deadline is not None]
        return min(deadlines) if deadlines else None

    def _expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [(cid, p) for cid, p in self._pending.items()
                       if p.deadline is not None and p.deadline <= now]
            for call_id, _ in expired:
                del self._pending[call_id]
        for _, pending in expired:
            _settle(pending.future, TimeoutError(f"{pending.what} did not answer in time"))

    def _read(self) -> None:
        leave_signals_to_the_main_thread()
        try:
            self._read_replies()
        except BaseException as exc:  # noqa: BLE001 - said, and every waiting call told
            why = f"the reply reader of {self.owner or 'this caller'} failed ({type(exc).__name__}: {exc})"
            log.exception("sage service caller: %s", why)
            with self._lock:
                self._reader_failure = why
            self._fail_all(why)

    def _read_replies(self) -> None:
        while True:
            with self._lock:
                self._reader_deadline = deadline = self._next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                replies = self._responses.get_many(64, True, timeout)
            except queue.Empty:
                self._expire()
                continue
            except (QueueClosed, OSError, ValueError):
                self._fail_all("the job ended before the service answered")
                return
            except Exception as exc:  # noqa: BLE001 - a batch we cannot read; the reader goes on
                # The batch is consumed and its call ids are lost with it: fail every call
                # waiting now (an answer that comes later is counted as late), keep reading.
                self._fail_all(f"its reply could not be read ({type(exc).__name__}: {exc})")
                continue
            for call_id, ok, value in replies:
                with self._lock:
                    pending = self._pending.pop(call_id, None)
                if pending is None:
                    if call_id >= 0:
                        self.late_replies += 1
                    continue
                _settle(pending.future, value, ok)
            self._expire()

    def _fail_all(self, why: str) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for p in pending.values():
            _settle(p.future, RuntimeError(f"{p.what}: {why}"))

    def close(self) -> None:
        """No more calls; the reader ends (the response queue is closed). Idempotent.
        Waits a bounded time for the reader (a done-callback may hang on it)."""
        with self._lock:
            self._closed = True
            reader = self._reader
        if reader is not None:
            self._responses.close()
            if reader is not threading.current_thread():  # close() from a done-callback
                reader.join(_CLOSE_JOIN_SECONDS)
                if reader.is_alive():
                    log.warning("sage service caller %s: its reply reader did not end in %g s "
                                "(a done-callback still running?)", self.owner, _CLOSE_JOIN_SECONDS)


class _ServiceHandle:
    def __init__(self, caller: ServiceCaller, service: str, asynchronous: bool):
        self._caller = caller
        self._service = service
        self._async = asynchronous

    def __getattr__(self, method: str):
        if method.startswith("__"):
            raise AttributeError(method)

        def invoke(*args, timeout: float | None = None, **kwargs):
            if self._async:
                return self._caller.submit(self._service, method, args, kwargs, timeout)
            return self._caller.call(self._service, method, args, kwargs, timeout)

        invoke.__name__ = method
        return invoke


class ServiceProxies:
    """``proxies["svc"].method(*args, timeout=None, **kwargs)``."""

    def __init__(self, caller: ServiceCaller, asynchronous: bool):
        self._caller = caller
        self._async = asynchronous

    def __getitem__(self, service: str) -> _ServiceHandle:
        return _ServiceHandle(self._caller, service, self._async)
