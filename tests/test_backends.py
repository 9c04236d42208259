"""The design note's backend-creation checks, for whichever profile is installed."""

import os

import pytest

from sage.utils import BackendUnavailableError, load_config
from sage.utils.queue_adapter import create_queue, get_queue_backend_info

from conftest import native_available, requires_ray


def _destroy(q):
    getattr(q, "destroy", q.close)()


def test_create_queue_with_the_new_backend_name():
    if not native_available():
        with pytest.raises(BackendUnavailableError, match="install.py --full"):
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
    with pytest.raises(BackendUnavailableError, match="install.py --minimal"):
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
