"""Shared fixtures. Every test gets unique queue names: the suite runs under pytest-xdist."""

import os
import uuid

import pytest


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
