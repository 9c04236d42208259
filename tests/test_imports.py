"""Import checks: every public path works (or fails clearly, naming the fix) at run time."""

import importlib
import pkgutil
import re
import warnings

import pytest

import sage

from conftest import native_available


def test_new_native_queue_path_imports_or_says_how_to_build_it():
    if native_available():
        from sage_ext.sage_queue.python.sage_queue import SageQueue

        assert SageQueue.__module__ == "sage_ext.sage_queue.python.sage_queue"
    else:
        from sage.utils.install_hint import native_build_hint

        with pytest.raises(ImportError, match=re.escape(native_build_hint())):
            importlib.import_module("sage_ext.sage_queue.python.sage_queue")


def test_queue_adapter_exports_the_documented_functions():
    from sage.utils.queue_adapter import (  # noqa: F401
        create_queue,
        get_queue_backend_info,
        get_queue_backends,
        get_recommended_queue_backend,
        is_sage_queue_available,
    )
    from sage.utils.queue_config import QueueConfig

    assert QueueConfig().backend == "auto"


def test_public_api_of_sage_utils_is_exactly_all():
    import sage.utils

    for name in sage.utils.__all__:
        assert getattr(sage.utils, name) is not None


def test_every_sage_module_imports_without_warnings():
    from conftest import ray_installed

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for info in pkgutil.walk_packages(sage.__path__, "sage."):
            if info.name == "sage.__main__":
                continue  # runs the CLI
            if info.name == "sage.utils.ray_queue" and not ray_installed():
                with pytest.raises(ImportError):
                    importlib.import_module(info.name)
                continue
            importlib.import_module(info.name)


def test_errors_module_needs_no_native_build():
    from sage.utils import QueueClosed as same
    from sage_ext.sage_queue.python.errors import QueueClosed

    assert QueueClosed is same
