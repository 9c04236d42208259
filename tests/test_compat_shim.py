"""The old import paths keep working, return the very same class, and warn at the caller's line."""

import importlib
import re
import sys

import pytest

from conftest import native_available, requires_native

OLD_FORMS = {
    "package": "from sage_ext.mmap_queue import SageQueue",
    "module": "from sage_ext.mmap_queue.sage_queue import SageQueue",
}


def _run_old_import(source):
    """Execute an old import statement as a caller module would; returns (namespace, filename)."""
    filename = f"<caller {source!r}>"
    namespace = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace, filename


@requires_native
@pytest.mark.parametrize("form", OLD_FORMS)
def test_old_import_returns_the_same_class_with_one_warning_at_the_callers_line(form):
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    with pytest.deprecated_call(match=r"sage_ext\.sage_queue\.python\.sage_queue") as record:
        namespace, filename = _run_old_import(OLD_FORMS[form])
    assert namespace["SageQueue"] is SageQueue
    deprecations = [w for w in record if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == 1
    assert deprecations[0].filename == filename and deprecations[0].lineno == 1


@requires_native
def test_attribute_access_on_the_old_module_warns_at_the_access():
    import sage_ext.mmap_queue as old
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    with pytest.deprecated_call() as record:
        cls = old.SageQueue
    assert cls is SageQueue
    assert record[0].filename == __file__


def test_a_name_that_never_existed_raises_attribute_error():
    import sage_ext.mmap_queue as old
    import sage_ext.mmap_queue.sage_queue as old_module

    with pytest.raises(AttributeError, match="NoSuchThing"):
        old.NoSuchThing  # noqa: B018
    with pytest.raises(AttributeError):
        old_module.MmapQueueV2  # noqa: B018
    with pytest.raises(ImportError):
        exec("from sage_ext.mmap_queue import NoSuchThing", {})


def test_importing_the_old_package_alone_does_not_warn(recwarn):
    sys.modules.pop("sage_ext.mmap_queue", None)
    importlib.import_module("sage_ext.mmap_queue")
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]
    assert "SageQueue" in dir(sys.modules["sage_ext.mmap_queue"])


def test_old_path_in_minimal_profile_says_how_to_install():
    if native_available():
        pytest.skip("the native module is built: the old path succeeds (tested above)")
    from sage.utils.install_hint import native_build_hint

    with pytest.deprecated_call():
        with pytest.raises(ImportError, match=re.escape(native_build_hint())):
            _run_old_import(OLD_FORMS["package"])
