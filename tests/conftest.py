"""Shared fixtures. Every test gets unique queue names: the suite runs under pytest-xdist."""

import dataclasses
import importlib.util
import os
import random
import time
import uuid

import pytest

# Ray must stay on loopback in tests (127.0.0.1); set before anything imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


# Time limits of the fault tests are multiplied by this. ci/sanitize.sh sets 3: its ASan
# build runs the native core several times slower, and there the limits are not the point.
TIME_SCALE = float(os.environ.get("SAGE_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A time limit of the tests, scaled for the sanitizer build (SAGE_TEST_TIME_SCALE)."""
    return seconds * TIME_SCALE


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
    """Queue ``name``'s file: where the native module says segments are (needs the build)."""
    from sage_ext.sage_queue.python import _native

    return os.path.join(_native.SEGMENT_DIR, _native.SEGMENT_PREFIX + name)


def write_segment_file(name: str, data: bytes, mode: int = 0o600) -> str:
    """Write a file at queue ``name``'s path as the native core makes one: ours, mode 0600
    whatever the umask (a wider mode is refused as not trusted before anything is read)."""
    path = segment_file(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    return path


def sage_queue_module():
    """The native queue's Python module, imported when a test needs it (minimal has none)."""
    from sage_ext.sage_queue.python import sage_queue

    return sage_queue



@pytest.fixture
def sq():
    """The native queue's Python module, as a fixture."""
    return sage_queue_module()

def new_queue_name(prefix: str = "fault") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def fresh():
    """Unique queue names, queues and forked children; every queue, hand-written segment
    and child is gone afterwards."""
    import multiprocessing
    import signal

    made, names, procs = [], [], []
    fork = multiprocessing.get_context("fork")

    class Fresh:
        @staticmethod
        def name():
            n = new_queue_name()
            names.append(n)
            return n

        @staticmethod
        def queue(**options):
            q = sage_queue_module().SageQueue(Fresh.name(), **options)
            made.append(q)
            return q

        @staticmethod
        def process(target, *args):
            p = fork.Process(target=target, args=args, daemon=True)
            p.start()
            procs.append(p)
            return p

    yield Fresh
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        p.join(5)
    for q in made:
        if q.attached:
            q.destroy()
    for n in names:
        try:
            os.unlink(segment_file(n))
        except FileNotFoundError:
            pass


def wait_for(cond, timeout: float, what: str) -> None:
    """Poll `cond` until true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.0005)


def kill(p) -> float:
    """SIGKILL process `p` and reap it; when it was killed."""
    import signal

    os.kill(p.pid, signal.SIGKILL)
    t = time.monotonic()
    p.join(5)
    return t

def observable_state(q) -> dict:
    """Everything another process can observe of a queue: every stats() field (counters,
    bytes_put/bytes_got, pids, waiters) plus the ring positions head/read/tail."""
    info = q.info()
    state = dataclasses.asdict(q.stats())
    state.update(head=info["head"], read=info["read"], tail=info["tail"])
    return state


def assert_unchanged(q, before: dict, what: str = "the call") -> None:
    """The queue's observable state equals ``before`` (an observable_state()), field by field."""
    after = observable_state(q)
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys()
               if before.get(k) != after.get(k)}
    assert not changed, f"{what} changed the queue: {changed} (field: (before, after))"


def wait_for_waiters(q, timeout: float = 10.0, **counts: int) -> dict:
    """Wait until q.info()["waiters"] shows exactly ``counts`` callers asleep in each named
    wait (get=, put=, join=): the blocked state itself, not a guess with a sleep. Returns
    the waiters seen; fails the test after ``timeout`` (scaled) seconds."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        waiters = q.info()["waiters"]
        if all(waiters[k] == n for k, n in counts.items()):
            return waiters
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {scaled(timeout):g} s waiting for {counts} callers asleep "
                        f"in the queue; waiters are {waiters}")
        time.sleep(0.001)


def random_seed() -> int:
    """The seed of a random test: $SAGE_TEST_SEED, else a fresh one. Printed, so a failure's
    captured output says how to rerun it."""
    env = os.environ.get("SAGE_TEST_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(1 << 32)
    print(f"random seed {seed} (rerun with SAGE_TEST_SEED={seed})")
    return seed


@pytest.fixture
def rng():
    """A random.Random seeded by random_seed(), for tests that take random decisions."""
    return random.Random(random_seed())
