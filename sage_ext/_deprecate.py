"""One helper for the modules kept only for old import paths.

A shim module calls ``deprecated_module(__name__, new_module, names)`` and gets the
``__getattr__``/``__dir__`` pair to install: each access to an old name imports the
new module, warns once per access with the caller's file and line, and returns the
very same object the new path gives.
"""

import importlib
import sys
import warnings

__all__ = ["deprecated_module"]


def deprecated_module(old_module: str, new_module: str, names):
    names = tuple(names)

    def __getattr__(attr):
        if attr not in names:
            raise AttributeError(f"module {old_module!r} has no attribute {attr!r}")
        # `from package import name` first probes with hasattr() inside importlib, then
        # fetches the name: answer the probe quietly, so the caller sees one warning (and,
        # where the new module cannot import, the warning before its ImportError).
        if sys._getframe(1).f_code.co_filename.startswith("<frozen importlib"):
            return None
        warnings.warn(
            f"{old_module}.{attr} is deprecated; import it from {new_module} instead "
            f"(from {new_module} import {attr})",
            DeprecationWarning,
            stacklevel=2,  # the frame doing the attribute access or `from ... import`
        )
        return getattr(importlib.import_module(new_module), attr)

    def __dir__():
        return sorted(names)

    return __getattr__, __dir__
