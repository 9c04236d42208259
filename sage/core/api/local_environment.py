"""LocalEnvironment: runs a declared pipeline on this machine.

``mode="thread"`` (the default, SAGE's own semantics): every task is a thread of this
process over python_queue, so functions share the driver's memory (a lambda that updates
a driver-side counter works). ``mode="process"``: every task instance is a process of
its own over the native sage_queue, so every core works; functions are copied into their
processes, and state they change stays there (collect results through a sink that
writes somewhere shared, or through a service).
"""

from __future__ import annotations

import dataclasses
import os
import secrets

from sage.runtime.job import Job, JobSummary, RuntimeOptions
from sage.runtime.plan import TRANSPORT_OF_MODE, build_plan
from sage.utils import BackendUnavailableError, is_sage_queue_available

from .base_environment import BaseEnvironment

__all__ = ["LocalEnvironment"]

_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(RuntimeOptions))


def _options(config: dict) -> RuntimeOptions:
    unknown = sorted(set(config) - set(_OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid: {', '.join(_OPTION_NAMES)}")
    return RuntimeOptions(**config)


class LocalEnvironment(BaseEnvironment):
    def __init__(self, name: str = "local", *, mode: str = "thread", config: dict | None = None):
        super().__init__(name, config=config)
        if mode not in TRANSPORT_OF_MODE:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(TRANSPORT_OF_MODE)}")
        if mode == "process" and not is_sage_queue_available():
            raise BackendUnavailableError(
                "mode='process' runs its tasks over the native sage_queue, which is not built "
                "here: run `python install.py --full` (or use mode='thread')")
        self.mode = mode
        self.options = _options(self.config)
        self.job: Job | None = None

    def submit(self, autostop: bool = False) -> JobSummary | Job:
        """Start the pipeline. ``autostop=True`` blocks until every finite source has ended
        and every item has reached the sinks, tears the job down and returns its summary;
        otherwise returns the running Job at once (see stop(), wait(), close())."""
        if self.job is not None and self.job.state in ("created", "running"):
            raise RuntimeError(f"environment {self.name!r} is running a job already; "
                               "stop() or close() it first")
        job_id = f"sage-{os.getpid()}-{secrets.token_hex(4)}"
        plan = build_plan(self._nodes, self._services, self.mode, job_id)
        self.job = Job(plan, self.options, env_name=self.name).start()
        if not autostop:
            return self.job
        try:
            return self.job.wait()
        finally:
            self.job.close()

    def run_streaming(self) -> None:
        """SAGE called this after submit(); the job already runs, so it does nothing."""

    def wait(self, timeout: float | None = None) -> JobSummary:
        """Block until the job ends by itself (its sources are finite); JobFailedError if a
        task failed."""
        return self._running("wait").wait(timeout)

    def stop(self, timeout: float | None = None) -> JobSummary:
        """End the sources, deliver everything in flight to the sinks, then tear down."""
        job = self._running("stop")
        try:
            return job.stop(timeout)
        finally:
            job.close()

    def close(self) -> None:
        """Stop if running, then free every thread, process and queue. Idempotent."""
        if self.job is not None:
            self.job.close()

    def metrics(self) -> list:
        """Live counters of each operator instance: items in, out, errors, input queue depth."""
        return self._running("metrics").metrics()

    def _running(self, what: str) -> Job:
        if self.job is None:
            raise RuntimeError(f"{what}(): nothing was submitted in {self.name!r}")
        return self.job

    def __enter__(self) -> LocalEnvironment:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalEnvironment({self.name!r}, mode={self.mode!r}, {len(self._nodes)} operators)"
