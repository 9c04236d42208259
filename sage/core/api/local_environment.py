"""LocalEnvironment: runs a declared pipeline on this machine.

``mode="thread"`` (the default, SAGE's own semantics): every task is a thread of this
process over python_queue, so functions share the driver's memory (a lambda that updates
a driver-side counter works). ``mode="process"``: every task (an operator instance, or a
chain of them: see below) is a process of its own over the native sage_queue, so every
core works; functions are copied into their
processes, and state they change stays there (collect results through a sink that
writes somewhere shared, or through a service).

Operators joined one-to-one (equal parallelism, one feeding only the other) run chained in
one task, as Flink chains them: no queue between them. ``config={"chaining": False}``, or
``disable_chaining()`` on one transformation, gives each its own task.
"""

from __future__ import annotations

import os
import secrets

from sage.runtime.job import Job, JobSummary, RuntimeOptions
from sage.runtime.plan import TRANSPORT_OF_MODE, build_plan
from sage.utils import BackendUnavailableError, is_sage_queue_available
from sage.utils.install_hint import native_build_hint

from .base_environment import BaseEnvironment, options_from

__all__ = ["LocalEnvironment"]


class LocalEnvironment(BaseEnvironment):
    def __init__(self, name: str = "local", *, mode: str = "thread", config: dict | None = None):
        super().__init__(name, config=config)
        if mode not in TRANSPORT_OF_MODE:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(TRANSPORT_OF_MODE)}")
        if mode == "process" and not is_sage_queue_available():
            raise BackendUnavailableError(
                "mode='process' runs its tasks over the native sage_queue, which is not built "
                f"here: {native_build_hint()} (or use mode='thread')")
        self.mode = mode
        self.options = options_from(self.config, RuntimeOptions)

    def submit(self, autostop: bool = False) -> JobSummary | Job:
        """Start the pipeline. ``autostop=True`` blocks until every finite source has ended
        and every item has reached the sinks, tears the job down and returns its summary;
        otherwise returns the running Job at once (see stop(), wait(), close())."""
        self._check_not_running()
        job_id = f"sage-{os.getpid()}-{secrets.token_hex(4)}"
        plan = build_plan(self._nodes, self._services, self.mode, job_id,
                          chaining=self.options.chaining)
        self.job = Job(plan, self.options, env_name=self.name).start()
        if not autostop:
            return self.job
        try:
            return self.job.wait()
        finally:
            self.job.close()

    def __repr__(self) -> str:
        return f"LocalEnvironment({self.name!r}, mode={self.mode!r}, {len(self._nodes)} operators)"
