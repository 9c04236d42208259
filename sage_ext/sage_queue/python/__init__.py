"""sage_queue's Python side.

The native module ``_native`` is found first in ``<sys.prefix>/sage-native/``: install.py
builds it there for a --full venv, so each venv of a checkout has its own build (or none)
and one venv's install never adds or removes another's. A wheel carries the module in this
package's own directory instead.
"""

import os as _os
import sys as _sys

VENV_NATIVE_DIR = _os.path.join(_sys.prefix, "sage-native")

if _os.path.isdir(VENV_NATIVE_DIR):
    __path__.insert(0, VENV_NATIVE_DIR)  # noqa: F821 (a package's __path__)
