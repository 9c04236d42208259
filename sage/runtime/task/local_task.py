"""A task on this machine: a thread of the driver, or a process of its own.

Threads (mode "thread", over python_queue) share the driver's memory, as SAGE's tasks did.
Processes (mode "process", over sage_queue) are forked from the driver (from whichever
thread submits the job; they die with the driver, not with that thread): functions,
lambdas and closures need no pickling, and state a function changes stays in its
process. A process reports a failure on the job's error queue, then exits with code 1;
one killed by a signal is seen by ProcessWatcher through its sentinel at once.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import traceback

from sage.utils import QueueClosed

from ..errors import TaskFailure
from ..router.chain_link import raised_in
from ..thread_signals import leave_signals_to_the_main_thread

__all__ = ["ThreadTask", "ProcessTask", "ProcessWatcher", "failure_of", "FORK"]

FORK = multiprocessing.get_context("fork")
_PR_SET_PDEATHSIG = 1


def failure_of(operator: str, instance: int, exc: BaseException) -> TaskFailure:
    """The failure of the task's operator instance, or of the one chained to it that raised."""
    operator, instance = raised_in(exc, (operator, instance))
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return TaskFailure(operator, instance, type(exc).__name__, str(exc), text)


def _cut(text: str, limit: int, keep_end: bool) -> str:
    """At most about ``limit`` characters of ``text``: its start (and end, if keep_end: a
    traceback's last lines name the error), saying how much was cut."""
    if len(text) <= limit:
        return text
    if keep_end:
        half = limit // 2
        return f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
    return f"{text[:limit]} [... {len(text) - limit} characters cut]"


def _guarded(body, operator: str, instance: int) -> TaskFailure | None:
    """Run the body; None if it ended well or the job closed its queues (an abort)."""
    try:
        body()
    except QueueClosed:
        return None  # the job is being torn down; it already knows why
    except BaseException as exc:  # noqa: BLE001 - every failure is the job's to report
        return failure_of(operator, instance, exc)
    return None


class ThreadTask:
    """A task body run by a daemon thread; its end goes to the job's event queue."""

    def __init__(self, key: str, operator: str, instance: int, body, events: queue.Queue):
        self.key, self.operator, self.instance = key, operator, instance
        self._body = body
        self._events = events
        self.thread = threading.Thread(target=self._main, name=f"sage-task-{key}", daemon=True)

    def _main(self) -> None:
        leave_signals_to_the_main_thread()
        failure = _guarded(self._body, self.operator, self.instance)
        self._events.put((self.key, failure))

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def is_alive(self) -> bool:
        return self.thread.is_alive()

    def terminate(self) -> None:
        """A thread cannot be killed; closing its queues (the job does) is what ends it."""


_driver_pipe_lock = threading.Lock()
_driver_pipe: tuple[int, int, int] | None = None  # (owner pid, read end, write end)


def driver_pipe() -> tuple[int, int]:
    """(read, write) ends of a pipe whose write end only the driver process keeps: its task
    processes see EOF on the read end once the driver is gone, however it ended."""
    global _driver_pipe
    with _driver_pipe_lock:
        if _driver_pipe is None or _driver_pipe[0] != os.getpid():
            if _driver_pipe is not None:  # a forked copy of another driver's pipe
                for fd in _driver_pipe[1:]:
                    _close_quietly(fd)
            _driver_pipe = (os.getpid(), *os.pipe())
        return _driver_pipe[1], _driver_pipe[2]


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _die_with_driver(parent_pid: int, read_end: int, write_end: int, forked_by_main: bool) -> None:
    """No task outlives the driver. A watchdog thread waits for EOF on the driver's pipe (all
    its write ends close when the driver exits, even by SIGKILL). PR_SET_PDEATHSIG is added
    only for a fork by the main thread: it fires when the forking *thread* ends (prctl(2)),
    and a job submitted from a worker thread must outlive that thread."""
    _close_quietly(write_end)  # ours would keep the pipe open
    if forked_by_main:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        leave_signals_to_the_main_thread()
        try:
            while os.read(read_end, 1):
                pass
        except OSError:
            pass
        os._exit(1)  # the driver is gone: nobody will read what this task produces

    threading.Thread(target=watch, name="sage-driver-watchdog", daemon=True).start()
    if os.getppid() != parent_pid:  # the driver died before the watchdog started
        os._exit(1)


class ProcessTask:
    """A task body run in a forked process."""

    def __init__(self, key: str, operator: str, instance: int, body, error_queue,
                 chained: tuple = ()):
        self.key, self.operator, self.instance = key, operator, instance
        self.chained = chained  # keys of the operator instances chained behind this one
        self._body = body
        self._errors = error_queue
        self.process = FORK.Process(target=self._main, args=(os.getpid(), *driver_pipe()),
                                    name=f"sage-task-{key}", daemon=True)

    def _main(self, parent_pid: int, read_end: int, write_end: int) -> None:
        _die_with_driver(parent_pid, read_end, write_end, self._forked_by_main)
        # Ctrl-C reaches the whole process group: the driver alone decides how to stop.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        failure = _guarded(self._body, self.operator, self.instance)
        if failure is not None:
            try:
                self._report(failure)
            finally:
                sys.stdout.flush()
                sys.exit(1)

    def _report(self, failure: TaskFailure) -> None:
        """Put the failure on the error queue; texts too large for its ring are cut to fit."""
        try:
            self._errors.put((self.key, failure.as_tuple()))
            return
        except ValueError as exc:
            if "larger than the ring" not in str(exc):
                raise
        budget = max(1024, getattr(self._errors, "capacity_bytes", 0) // 16)  # chars a text
        cut = TaskFailure(failure.operator, failure.instance, failure.exc_type,
                          _cut(failure.message, budget, keep_end=False),
                          _cut(failure.traceback_text, budget, keep_end=True))
        self._errors.put((self.key, cut.as_tuple()))

    def start(self) -> None:
        # read in the child (a copy of self): after a fork, threading calls any thread main
        self._forked_by_main = threading.current_thread() is threading.main_thread()
        self.process.start()

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    # Only ProcessWatcher reaps the process (waitpid); these look at its sentinel, since two
    # threads reaping one child race and one of them sees no exit code.
    def join(self, timeout: float | None = None) -> None:
        multiprocessing.connection.wait([self.sentinel], timeout)

    def is_alive(self) -> bool:
        return not multiprocessing.connection.wait([self.sentinel], 0)

    def terminate(self) -> None:
        if self.is_alive():
            self.process.kill()

    def reap(self) -> None:
        """Collect the exit status where no ProcessWatcher runs (a start that failed)."""
        if self.process.pid is not None:
            self.process.join(0)


class ProcessWatcher:
    """A driver thread that turns each task process's exit into an event, at once: exit code
    0 ends well, 1 carries the failure the process reported, a signal names the signal."""

    def __init__(self, tasks: list, error_queue, events: queue.Queue):
        self._tasks = {task.sentinel: task for task in tasks}
        self._errors = error_queue
        self._events = events
        self._reports: dict = {}
        self.thread = threading.Thread(target=self._main, name="sage-process-watcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def _main(self) -> None:
        leave_signals_to_the_main_thread()
        remaining = dict(self._tasks)
        while remaining:
            for sentinel in multiprocessing.connection.wait(list(remaining)):
                task = remaining.pop(sentinel)
                task.process.join()
                self._events.put((task.key, self._failure(task)))

    def _failure(self, task: ProcessTask) -> TaskFailure | None:
        code = task.process.exitcode
        if code == 0:
            return None
        if code < 0:
            name = signal.Signals(-code).name
            return TaskFailure(task.operator, task.instance, name,
                               f"its process (pid {task.process.pid}) was killed by signal "
                               f"{name}{self._also_ran(task)}")
        report = self._report(task.key)
        if report is not None:
            return TaskFailure(*report)
        return TaskFailure(task.operator, task.instance, "ProcessExit",
                           f"its process (pid {task.process.pid}) exited with code {code}"
                           f"{self._also_ran(task)}")

    @staticmethod
    def _also_ran(task: ProcessTask) -> str:
        return f" (it also ran {', '.join(task.chained)}, chained)" if task.chained else ""

    def _report(self, key: str):
        # the process put its report before exiting, so it is queued by now
        while key not in self._reports:
            try:
                for k, report in self._errors.get_many(64, False):
                    self._reports[k] = report
            except (queue.Empty, QueueClosed):
                return None
        return self._reports.pop(key)
