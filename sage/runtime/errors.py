"""Errors the runtime raises in the driver and in service callers."""

from __future__ import annotations

__all__ = ["JobFailedError", "PlacementError", "RemoteServiceError", "TaskFailure"]


class TaskFailure:
    """Why one task instance ended badly: plain strings, so it crosses processes as is."""

    __slots__ = ("operator", "instance", "exc_type", "message", "traceback_text")

    def __init__(self, operator: str, instance: int, exc_type: str, message: str,
                 traceback_text: str = ""):
        self.operator = operator
        self.instance = instance
        self.exc_type = exc_type
        self.message = message
        self.traceback_text = traceback_text

    def as_tuple(self) -> tuple:
        return (self.operator, self.instance, self.exc_type, self.message, self.traceback_text)


class JobFailedError(RuntimeError):
    """A task of the job failed: names the operator and instance, the original exception's
    type and message, and its traceback text (from the task's thread or process)."""

    def __init__(self, failure: TaskFailure):
        self.operator = failure.operator
        self.instance = failure.instance
        self.exc_type = failure.exc_type
        self.message = failure.message
        self.traceback_text = failure.traceback_text
        text = (f"operator {failure.operator!r} instance {failure.instance} failed: "
                f"{failure.exc_type}: {failure.message}")
        if failure.traceback_text:
            text += "\n\n" + failure.traceback_text.rstrip()
        super().__init__(text)

    def __reduce__(self):
        return (_rebuild_job_failed, ((self.operator, self.instance, self.exc_type,
                                       self.message, self.traceback_text),))


def _rebuild_job_failed(fields: tuple) -> JobFailedError:
    return JobFailedError(TaskFailure(*fields))


class RemoteServiceError(RuntimeError):
    """A service raised an exception that could not be sent back as itself (not picklable):
    its type name, message and traceback text."""

    def __init__(self, exc_type: str, message: str, traceback_text: str = ""):
        self.exc_type = exc_type
        self.message = message
        self.traceback_text = traceback_text
        super().__init__(f"{exc_type}: {message}")

    def __reduce__(self):
        return (RemoteServiceError, (self.exc_type, self.message, self.traceback_text))


class PlacementError(RuntimeError):
    """A job's tasks could not be placed on the Ray cluster (resources nobody has, a
    cluster too small, sage missing on a node): says what was asked and what there is."""
