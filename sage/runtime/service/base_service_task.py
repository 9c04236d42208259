"""ServiceTask: runs one registered service; answers requests in order, one at a time.

The service object is constructed inside the task (its thread or process). Each request's
answer goes to the caller's own response queue: the value, or the exception the method
raised (as itself when it can be pickled, else a RemoteServiceError with its type, message
and traceback text). A caller that has gone away is skipped. STOP_REQUEST ends the task
after everything queued before it has been answered.
"""

from __future__ import annotations

import pickle
import traceback

from sage.utils import QueueClosed

from ..errors import RemoteServiceError
from .service_caller import STOP_REQUEST

__all__ = ["ServiceTask"]


def _with_remote_traceback(exc: BaseException, service: str) -> BaseException:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if hasattr(exc, "add_note"):
        exc.add_note(f"raised in service {service!r}:\n{text.rstrip()}")
    exc.remote_traceback = text
    return exc


class ServiceTask:
    def __init__(self, spec, request_queue, response_queues: dict, ctx):
        self.spec = spec
        self.name = spec.decl.name
        self.requests = request_queue
        self.responses = response_queues
        self.ctx = ctx
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
            for request in requests:
                if request is STOP_REQUEST:
                    self.requests.close()  # later calls fail at once instead of waiting
                    return
                self._answer(service, *request)

    def _answer(self, service, caller_id, call_id, method, args, kwargs) -> None:
        try:
            reply = (call_id, True, getattr(service, method)(*args, **kwargs))
        except Exception as exc:  # the caller gets it; the service goes on
            reply = (call_id, False, _with_remote_traceback(exc, self.name))
        self.handled += 1
        queue = self.responses.get(caller_id)
        if queue is None:
            return
        try:
            queue.put(reply)
        except QueueClosed:
            pass  # the caller finished; nobody waits for this answer
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            value = reply[2]
            if reply[1]:
                error = RemoteServiceError(type(exc).__name__,
                                           f"the result of {method!r} cannot be sent back: {exc}")
            else:
                error = RemoteServiceError(type(value).__name__, str(value),
                                           getattr(value, "remote_traceback", ""))
            try:
                queue.put((call_id, False, error))
            except QueueClosed:
                pass
