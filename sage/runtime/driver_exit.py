"""How the driver's end takes its jobs with it: SIGTERM, Ctrl-C and interpreter exit.

Task processes also die with the driver on their own (a pipe watchdog, see local_task);
these hooks make sure the driver tears its jobs down first, so segments go too.
"""

from __future__ import annotations

import atexit
import signal
import threading
import weakref

__all__ = ["live_jobs", "unwind_on_sigterm", "restore_sigterm", "register_exit_hook"]

live_jobs: weakref.WeakSet = weakref.WeakSet()  # started and not torn down yet
_default_sigterm_replaced = False


def _sigterm_unwinds(signum, frame):
    raise SystemExit(128 + signum)


def unwind_on_sigterm() -> None:
    """SIGTERM's default kills the driver on the spot, leaving task processes and segments
    behind. While jobs run (and nobody chose a handler) it unwinds like Ctrl-C, so the
    jobs are torn down by whoever catches it, or at exit."""
    global _default_sigterm_replaced
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_unwinds)
        _default_sigterm_replaced = True


def restore_sigterm() -> None:
    global _default_sigterm_replaced
    if (_default_sigterm_replaced and not live_jobs
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is _sigterm_unwinds):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _default_sigterm_replaced = False


def _end_jobs_at_exit() -> None:
    for job in list(live_jobs):
        job._teardown(abort=True)


_exit_hook_registered = False


def register_exit_hook() -> None:
    """Registered once queues exist: atexit runs hooks last-in first-out, so this one runs
    before the queue module's own exit hook detaches every handle."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(_end_jobs_at_exit)
        _exit_hook_registered = True
