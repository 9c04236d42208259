"""How to add a missing part, said for the way this package was installed.

From a checkout (an editable install: install.py sits beside the packages) the fix is
install.py; from a wheel it is pip, since a wheel carries no install.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["from_checkout", "native_build_hint", "ray_hint", "plot_hint"]

DISTRIBUTION = "sage-queue"
_ROOT = Path(__file__).resolve().parents[2]  # the checkout's root, or site-packages


def from_checkout() -> bool:
    """True when the package runs from a source tree that has install.py."""
    return (_ROOT / "install.py").is_file() and (_ROOT / "pyproject.toml").is_file()


def native_build_hint() -> str:
    """How to get the native sage_queue extension."""
    if from_checkout():
        return "run `python install.py --full` (builds the native extension with CMake)"
    # setup.py builds the extension only with SAGE_BUILD_NATIVE=1, so it has to be built
    # from the source distribution: --no-binary refuses wheels, and --no-cache-dir keeps pip
    # from reusing the pure-Python wheel it built and cached from that sdist before.
    return (f"this {DISTRIBUTION} was installed from a wheel without it: rebuild from the source "
            f"distribution with `SAGE_BUILD_NATIVE=1 pip install --force-reinstall --no-deps "
            f"--no-cache-dir --no-binary {DISTRIBUTION} {DISTRIBUTION}` (or the sdist's path "
            "instead of the last name; needs a C++ compiler and CMake >= 3.18 on PATH)")


def ray_hint() -> str:
    """How to get Ray, for ray_queue."""
    if from_checkout():
        return "run `python install.py --minimal` (or --full: both install Ray)"
    return f"run `pip install '{DISTRIBUTION}[ray]'`"


def plot_hint() -> str:
    """How to get matplotlib, for `sage bench --plot` (the extra `plot`)."""
    if from_checkout():  # a pip install of the checkout would redo its native build: only add matplotlib
        return f"run `{sys.executable} -m pip install 'matplotlib>=3.5'`"
    return f"run `{sys.executable} -m pip install '{DISTRIBUTION}[plot]'`"
