"""Creating queues by backend name, configuration and profile, for whichever profile is installed."""

import os
import re

import pytest

from sage.utils import BackendUnavailableError, load_config
from sage.utils.install_hint import native_build_hint, ray_hint
from sage.utils.queue_adapter import create_queue, get_queue_backend_info

from conftest import native_available, requires_ray


def _destroy(q):
    getattr(q, "destroy", q.close)()


def test_create_queue_with_the_new_backend_name():
    if not native_available():
        with pytest.raises(BackendUnavailableError, match=re.escape(native_build_hint())):
            create_queue("sage_queue")
        return
    q = create_queue("sage_queue")
    assert type(q).__name__ == "SageQueue"
    _destroy(q)


def test_create_queue_with_the_short_name_maps_to_sage_queue():
    if not native_available():
        with pytest.raises(BackendUnavailableError, match="sage_queue"):
            create_queue("sage")
        return
    q = create_queue("sage")
    assert type(q).__name__ == "SageQueue"
    _destroy(q)


def test_create_queue_automatic_choice_follows_what_is_installed(clean_env, tmp_path, request):
    config = load_config(environ={}, prefix=str(tmp_path))  # nothing configured
    expected = get_queue_backend_info(config)["current_backend"]
    if expected == "ray_queue":
        request.getfixturevalue("ray_cluster")
    q = create_queue(config=config)
    assert q.backend == expected
    assert expected == ("sage_queue" if native_available() else "ray_queue")
    _destroy(q)


def test_backend_info_reports_the_new_name():
    info = get_queue_backend_info(load_config(environ={"SAGE_QUEUE_BACKEND": "sage"}))
    assert info["current_backend"] == "sage_queue"
    assert "sage_queue" in info["backends"]
    assert "sage_mmap_queue" not in info["backends"]
    assert info["available"]["sage_queue"] is native_available()
    assert info["settings"]["backend"]["source"] == "env SAGE_QUEUE_BACKEND"


@pytest.mark.parametrize("profile,backend", [("full", "sage_queue"), ("minimal", "ray_queue")])
def test_recorded_profile_decides_the_default_backend_and_env_overrides(tmp_path, profile, backend):
    short = backend.split("_")[0]
    (tmp_path / "sage-profile.json").write_text(f'{{"profile": "{profile}", "queue_backend": "{short}"}}')
    config = load_config(environ={}, prefix=str(tmp_path))
    assert config.backend == backend
    assert config.sources["backend"].startswith("profile ")
    overridden = load_config(environ={"SAGE_QUEUE_BACKEND": "python"}, prefix=str(tmp_path))
    assert overridden.backend == "python_queue"


@requires_ray
def test_create_queue_ray_short_name(ray_cluster):
    q = create_queue("ray")
    assert q.backend == "ray_queue"
    q.put(1)
    assert q.get(timeout=10) == 1
    _destroy(q)


def test_unknown_backend_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        create_queue("bogus")
    for name in ("sage_queue", "ray_queue", "python_queue", "sage", "ray", "python"):
        assert name in str(err.value)


def test_legacy_backend_name_works_and_warns_at_the_callers_line():
    with pytest.deprecated_call(match="use 'sage_queue'") as record:
        try:
            q = create_queue("sage_mmap_queue")  # the line the warning must name
        except BackendUnavailableError:
            assert not native_available()  # minimal profile: warned, then said how to install
            q = None
    line = record[0].lineno
    assert record[0].filename == __file__
    assert open(__file__).read().splitlines()[line - 1].strip().startswith("q = create_queue(")
    if q is not None:
        assert type(q).__name__ == "SageQueue"
        _destroy(q)


def test_missing_backend_is_an_error_unless_a_fallback_is_asked_for(monkeypatch):
    from sage.utils import queue_adapter

    monkeypatch.setitem(queue_adapter._AVAILABLE, "ray_queue", lambda: False)
    with pytest.raises(BackendUnavailableError, match=re.escape(ray_hint())):
        create_queue("ray_queue")
    with pytest.warns(RuntimeWarning, match="falling back to 'python_queue'"):
        q = create_queue("ray_queue", fallback="python")
    assert type(q).__name__ == "PythonQueue"


def test_unknown_option_for_a_backend_is_a_type_error():
    with pytest.raises(TypeError, match="python_queue does not take"):
        create_queue("python", capacity_bytes=1024)


def test_environment_variable_short_names_map_to_backends():
    for short, full in (("sage", "sage_queue"), ("ray", "ray_queue"), ("python", "python_queue")):
        assert load_config(environ={"SAGE_QUEUE_BACKEND": short}).backend == full
        assert load_config(environ={"SAGE_QUEUE_BACKEND": full}).backend == full


def test_python_queue_is_always_available():
    q = create_queue("python_queue")
    q.put(os.getpid())
    assert q.get() == os.getpid()


# -- the adapter's fallback paths ------------------------------------------------------------

def _unavailable(monkeypatch, *names):
    from sage.utils import queue_adapter

    for name in names:
        monkeypatch.setitem(queue_adapter._AVAILABLE, name, lambda: False)
    return queue_adapter


def test_fallback_auto_takes_the_recommended_backend_with_a_warning(monkeypatch):
    adapter = _unavailable(monkeypatch, "ray_queue")
    monkeypatch.setattr(adapter, "get_recommended_queue_backend",
                        lambda: ("python_queue", "for the test"))
    with pytest.warns(RuntimeWarning, match="falling back to 'python_queue' as asked"):
        q = create_queue("ray_queue", fallback="auto")
    assert q.backend == "python_queue"


def test_a_fallback_that_is_not_installed_either_is_an_error_naming_both(monkeypatch):
    _unavailable(monkeypatch, "ray_queue", "sage_queue")
    with pytest.raises(BackendUnavailableError,
                       match="'ray_queue' is not installed.*the fallback 'sage_queue' is not installed"):
        create_queue("ray", fallback="sage")


def test_an_unknown_fallback_name_is_a_value_error(monkeypatch):
    _unavailable(monkeypatch, "ray_queue")
    with pytest.raises(ValueError, match="fallback: unknown queue backend 'bogus'"):
        create_queue("ray", fallback="bogus")


def test_a_configured_backend_that_is_not_installed_is_an_error_not_a_substitute(monkeypatch):
    _unavailable(monkeypatch, "sage_queue")
    config = load_config(environ={"SAGE_QUEUE_BACKEND": "sage"})
    with pytest.raises(BackendUnavailableError, match="queue backend 'sage_queue' is not installed"):
        create_queue(config=config)


def test_auto_with_neither_native_nor_ray_is_python_queue_and_says_why(monkeypatch, clean_env, tmp_path):
    _unavailable(monkeypatch, "sage_queue", "ray_queue")
    from sage.utils import queue_adapter

    monkeypatch.setattr(queue_adapter, "is_sage_queue_available", lambda: False)
    monkeypatch.setattr(queue_adapter, "is_ray_queue_available", lambda: False)
    config = load_config(environ={}, prefix=str(tmp_path))
    info = get_queue_backend_info(config)
    assert info["current_backend"] == "python_queue"
    assert "neither the native sage_queue extension nor Ray" in info["reason"]
    assert create_queue(config=config).backend == "python_queue"


def test_install_hints_name_install_py_in_a_checkout_and_pip_from_a_wheel(monkeypatch):
    from sage.utils import install_hint, queue_adapter

    monkeypatch.setattr(install_hint, "from_checkout", lambda: True)
    assert "python install.py --full" in queue_adapter.BACKENDS["sage_queue"].install_hint
    assert "python install.py --minimal" in queue_adapter.BACKENDS["ray_queue"].install_hint
    monkeypatch.setattr(install_hint, "from_checkout", lambda: False)
    native = queue_adapter.BACKENDS["sage_queue"].install_hint
    assert "install.py" not in native
    assert "SAGE_BUILD_NATIVE=1 pip install --force-reinstall --no-deps --no-cache-dir --no-binary sage-queue sage-queue" in native
    assert "pip install 'sage-queue[ray]'" in queue_adapter.BACKENDS["ray_queue"].install_hint
