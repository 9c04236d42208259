"""The runtime's threads leave SIGINT and SIGTERM to the driver's main thread."""

from __future__ import annotations

import signal

__all__ = ["leave_signals_to_the_main_thread"]

_DRIVER_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def leave_signals_to_the_main_thread() -> None:
    """Called first in every thread the runtime starts. The kernel gives a process's signal
    to any thread that does not block it, and Python runs handlers only in the main thread:
    a Ctrl-C that lands in a task thread would leave the main thread asleep in wait()."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _DRIVER_SIGNALS)
