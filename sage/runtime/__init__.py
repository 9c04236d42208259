"""The runtime: a declared pipeline planned into task instances, run as a Job.

plan.py (graph -> instances and edges), job.py (a running job), task/ (the loops),
router/ (routing, batching, end markers), service/ (request/response services),
thread_signals.py (its threads leave Ctrl-C and SIGTERM to the main thread). On Ray:
ray_connect.py (joining or starting Ray), ray_job.py (a job whose tasks are actors),
ray_placement.py (each queue's transport from where its reader and writers landed),
task/ray_task.py (the actor).
"""

from .errors import JobFailedError, RemoteServiceError

__all__ = ["JobFailedError", "RemoteServiceError"]
