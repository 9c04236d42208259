"""ServiceTask: runs one registered service; answers requests in order, one at a time.

The service object is constructed inside the task (its thread or process). Each request's
answer goes to the caller's own response queue: the value, or the exception the method
raised (as itself when it can be sent, else a RemoteServiceError with its type, message
and traceback text). A caller that has gone away is skipped. STOP_REQUEST ends the task
after everything queued before it has been answered; requests that land after it are
answered with a "service stopped" error, so no caller waits for an answer that never comes.
"""

from __future__ import annotations

import pickle
import traceback

from sage.utils import QueueClosed

from ..errors import RemoteServiceError
from .service_caller import STOP_REQUEST

__all__ = ["ServiceTask"]

# Sent by the queue's own codec, never pickled: no need to check that they come back.
_PLAIN_TYPES = frozenset({type(None), bool, int, float, str, bytes})


def _with_remote_traceback(exc: BaseException, service: str) -> BaseException:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if hasattr(exc, "add_note"):
        exc.add_note(f"raised in service {service!r}:\n{text.rstrip()}")
    exc.remote_traceback = text
    return exc


def _unsendable(method: str, ok: bool, value, why: BaseException) -> RemoteServiceError:
    """What the caller gets instead of a reply that cannot cross to its process."""
    if ok:
        return RemoteServiceError(type(why).__name__,
                                  f"the result of {method!r} cannot be sent back: {why}")
    return RemoteServiceError(type(value).__name__, str(value),
                              getattr(value, "remote_traceback", ""))


def _is_larger_than_ring(exc: ValueError) -> bool:
    return "larger than the ring" in str(exc)


class ServiceTask:
    def __init__(self, spec, request_queue, response_queues: dict, ctx,
                 crosses_processes: bool = False):
        self.spec = spec
        self.name = spec.decl.name
        self.requests = request_queue
        self.responses = response_queues
        self.ctx = ctx
        # process mode: a reply is pickled, and must also unpickle in the caller's process
        self.crosses_processes = crosses_processes
        self.handled = 0

    def build_service(self):
        decl = self.spec.decl
        service = decl.cls(*decl.args, **decl.kwargs)
        try:
            service.ctx = self.ctx
        except AttributeError:
            pass
        return service

    def run(self) -> None:
        service = self.build_service()
        while True:
            try:
                requests = self.requests.get_many(64)
            except QueueClosed:
                return
            for position, request in enumerate(requests):
                if request is STOP_REQUEST:
                    self.requests.close()  # later calls fail at once instead of waiting
                    self._refuse(requests[position + 1:])
                    return
                self._answer(service, *request)

    def _refuse(self, requests: list) -> None:
        """Answer what landed after STOP (the rest of its batch, then the closed queue's
        remainder) with an error: a service calling this one would otherwise wait forever."""
        while True:
            for request in requests:
                if request is not STOP_REQUEST:
                    caller_id, call_id, method = request[:3]
                    error = RuntimeError(f"service {self.name!r} has stopped; "
                                         f"{method!r} was not called")
                    self._send(caller_id, call_id, False, error, method)
            try:
                requests = self.requests.get_many(64, False)
            except Exception:  # noqa: BLE001 - empty, closed or gone: nothing more to answer
                return

    def _answer(self, service, caller_id, call_id, method, args, kwargs) -> None:
        try:
            ok, value = True, getattr(service, method)(*args, **kwargs)
        except Exception as exc:  # the caller gets it; the service goes on
            ok, value = False, _with_remote_traceback(exc, self.name)
        self.handled += 1
        self._send(caller_id, call_id, ok, value, method)

    def _send(self, caller_id, call_id, ok: bool, value, method: str) -> None:
        queue = self.responses.get(caller_id)
        if queue is None:
            return
        if self.crosses_processes and type(value) not in _PLAIN_TYPES:
            try:  # a reply that pickles but does not unpickle would fail in the caller's reader
                pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
            except Exception as exc:  # noqa: BLE001 - any failure: the caller gets its image
                ok, value = False, _unsendable(method, ok, value, exc)
        try:
            queue.put((call_id, ok, value))
            return
        except QueueClosed:
            return  # the caller finished; nobody waits for this answer
        except ValueError as exc:
            if not _is_larger_than_ring(exc):
                raise
            error = RemoteServiceError("ValueError", (
                f"the {'result' if ok else 'error'} of {method!r} does not fit the response "
                f"queue: {exc}; raise the job's service_capacity_bytes "
                f"(config={{'service_capacity_bytes': ...}})"))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            error = _unsendable(method, ok, value, exc)
        try:
            queue.put((call_id, False, error))
        except QueueClosed:
            pass
