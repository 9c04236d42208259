"""What works in this interpreter's environment, as one JSON line on stdout.

    python -m sage.utils.self_check

install.py runs it in the venv it made, after every install and for --check: the native
queue (a put in a spawned process and a get here), Ray (imported, not started), the
python queue, the backend create_queue() picks, and the test tools' versions.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import sys
import time


def _put_from_child(name: str, item) -> None:
    """The spawned child of the self-check: attach by name and put one item."""
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    q = SageQueue.open(name)
    q.put(item, timeout=30)
    q.detach()


def _native_round_trip(SageQueue) -> None:
    """Put an item in a spawned child, get it here; raise on any failure."""
    import multiprocessing

    item = {"from": "the self-check", "payload": bytes(range(256)) * 64}
    q = SageQueue.create(f"install-check-{os.getpid()}-{time.monotonic_ns()}", capacity_bytes=1 << 20)
    child = multiprocessing.get_context("spawn").Process(target=_put_from_child, args=(q.name, item))
    try:
        child.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                got = q.get(timeout=0.2)
                break
            except queue.Empty:
                if not child.is_alive():  # it has put already or it never will
                    got = q.get(timeout=0.5)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("no item from the child process within 60 s") from None
        child.join(30)
        if got != item:
            raise RuntimeError("the item arrived changed")
        if child.exitcode != 0:
            raise RuntimeError(f"the child process exited with {child.exitcode}")
    except queue.Empty:
        raise RuntimeError(f"the child process exited ({child.exitcode}) without putting an item") from None
    finally:
        q.destroy()
        if child.is_alive():
            child.kill()


def _self_check_native() -> dict:
    try:
        from sage.utils import create_queue
        from sage_ext.sage_queue.python.sage_queue import SageQueue

        create_queue("sage_queue").destroy()  # the queue layer reaches it too
    except ImportError as exc:
        return {"status": "not built", "detail": str(exc)}
    except Exception as exc:  # anything but ImportError means a broken build, not a missing one
        return {"status": "broken", "detail": f"import raised {type(exc).__name__}: {exc}"}
    try:
        _native_round_trip(SageQueue)
    except Exception as exc:
        return {"status": "broken", "detail": f"put/get across two processes failed: "
                                              f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "detail": "put/get across two processes ok"}


def _self_check_ray() -> dict:
    import importlib.metadata

    try:
        version = importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return {"status": "not installed", "detail": None}
    try:
        import ray  # noqa: F401  (import only: starting Ray takes seconds and ~600 MB)
    except Exception as exc:
        return {"status": "broken", "detail": f"ray {version} does not import: {exc}"}
    return {"status": "ok", "detail": version}


def _self_check_python_queue() -> dict:
    from sage.utils import create_queue

    q = create_queue("python_queue")
    q.put("item")
    return {"status": "ok" if q.get(timeout=1) == "item" else "broken", "detail": None}


def _self_check_default_backend() -> dict:
    """What create_queue() picks here (the recorded profile, unless SAGE_QUEUE_* says otherwise)."""
    from sage.utils import get_queue_backend_info

    info = get_queue_backend_info()
    return {"status": "ok", "detail": info["current_backend"], "reason": info["reason"]}


def main() -> int:
    """Print, as one JSON line, what works in this interpreter's environment."""
    import importlib.metadata

    result = {"python": platform.python_version(), "executable": sys.executable, "problems": []}
    try:
        import sage  # noqa: F401
        import sage_ext  # noqa: F401
    except ImportError as exc:
        # Nothing below can run without it: report this alone, as a problem, not a crash.
        result["problems"].append(f"the sage package does not import: {exc}")
        print(json.dumps(result))
        return 0
    result["native"] = _self_check_native()
    result["ray"] = _self_check_ray()
    result["python_queue"] = _self_check_python_queue()
    try:
        result["default_backend"] = _self_check_default_backend()
    except Exception as exc:  # a bad SAGE_QUEUE_* value, say: report it, do not crash
        result["default_backend"] = {"status": "broken", "detail": f"{type(exc).__name__}: {exc}"}
    tools = {}
    for name in ("pytest", "pytest-xdist", "tox"):
        try:
            tools[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            tools[name] = None
    result["tools"] = tools
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
