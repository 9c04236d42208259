"""Shared fixtures. Every test gets unique queue names: the suite runs under pytest-xdist."""

import importlib.util
import os
import uuid

import pytest

# Ray must stay on loopback in tests (MACHINE-NOTES); set before anything imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


# Time limits of the fault tests are multiplied by this. ci/sanitize.sh sets 3: its ASan
# build runs the native core several times slower, and there the limits are not the point.
TIME_SCALE = float(os.environ.get("SAGE_TEST_TIME_SCALE", "1"))


def package_root() -> str:
    """Where the sage packages under test are imported from: the source tree, or a
    site-packages (tox installs a wheel). Child interpreters get it on PYTHONPATH, so they
    import the same build as the test, never another one lying in the tree."""
    import sage_ext

    return os.path.dirname(os.path.dirname(os.path.abspath(sage_ext.__file__)))


def child_env(**extra) -> dict:
    """os.environ plus package_root() first on PYTHONPATH, plus extra."""
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root(), os.environ.get("PYTHONPATH")]))
    return env


def native_available() -> bool:
    try:
        import sage_ext.sage_queue.python.sage_queue  # noqa: F401
    except ImportError:
        return False
    return True


# The full profile sets SAGE_REQUIRE_NATIVE=1 so a missing build fails instead of skipping.
requires_native = pytest.mark.skipif(
    not native_available() and os.environ.get("SAGE_REQUIRE_NATIVE") != "1",
    reason="the native sage_queue extension is not built (minimal profile)",
)


def ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


# Both profiles install Ray; SAGE_REQUIRE_RAY=1 (set by CI) turns a missing Ray into a failure.
requires_ray = pytest.mark.skipif(
    not ray_installed() and os.environ.get("SAGE_REQUIRE_RAY") != "1",
    reason="Ray is not installed in this environment",
)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray on 127.0.0.1 per test process (xdist worker), shut down at the end."""
    import ray

    from sage.utils.ray_queue import ensure_ray

    ensure_ray()
    yield ray
    ray.shutdown()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No SAGE_QUEUE_* variables, no config file in the working directory."""
    for key in list(os.environ):
        if key.startswith("SAGE_QUEUE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.fixture
def queue_name(request):
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_queue(queue_name):
    """Create SageQueues that are destroyed after the test, whatever happens."""
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    made = []

    def make(name=None, **options):
        q = SageQueue(name or f"{queue_name}-{len(made)}", **options)
        made.append(q)
        return q

    yield make
    for q in made:
        if q.attached:
            q.destroy()


def segment_file(name: str) -> str:
    return f"/dev/shm/sage_queue.{name}"
