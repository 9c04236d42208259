"""The queue adapter: the only module that knows the backends.

``create_queue()`` picks a backend by explicit name, else by configuration
(``SAGE_QUEUE_BACKEND``, the config file, the install profile), else automatically:
sage_queue if the native module works, else ray_queue if Ray is installed, else
python_queue. A named backend that is not installed is an error that says how to
install it; it is never silently replaced (unless ``fallback=`` asks, and then it warns).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable

from . import install_hint
from .errors import BackendUnavailableError
from .queue_config import (
    BACKEND_NAMES,
    LEGACY_BACKEND_NAMES,
    QueueConfig,
    load_config,
    normalize_backend_name,
    read_profile,
)

__all__ = [
    "create_queue",
    "get_queue_backend_info",
    "get_recommended_queue_backend",
    "get_queue_backends",
    "is_sage_queue_available",
    "is_ray_queue_available",
    "BackendUnavailableError",
]


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    name: str
    summary: str
    hint: Callable[[], str]  #: how to install it, for the way this package was installed
    capabilities: dict

    @property
    def install_hint(self) -> str:
        return self.hint()


BACKENDS = {
    "sage_queue": BackendSpec(
        "sage_queue", "native shared-memory queue: processes on one machine",
        install_hint.native_build_hint,
        dict(cross_process=True, cross_machine=False, picklable=True, batch=True,
             task_done=True, persistent=True),
    ),
    "ray_queue": BackendSpec(
        "ray_queue", "queue on a Ray actor: tasks on several machines",
        install_hint.ray_hint,
        dict(cross_process=True, cross_machine=True, picklable=True, batch=True,
             task_done=True, persistent=False),
    ),
    "python_queue": BackendSpec(
        "python_queue", "the standard library's queue.Queue: threads in one process",
        lambda: "always available",
        dict(cross_process=False, cross_machine=False, picklable=False, batch=True,
             task_done=True, persistent=False),
    ),
}
assert tuple(BACKENDS) == BACKEND_NAMES


def _native_status() -> tuple[bool, str | None, str | None]:
    """(works, error, path) of the native extension; imported once per process."""
    try:
        module = importlib.import_module("sage_ext.sage_queue.python._native")
    except ImportError as exc:
        return False, str(exc), None
    return True, None, getattr(module, "__file__", None)


_native_cache: tuple | None = None


def _native() -> tuple[bool, str | None, str | None]:
    global _native_cache
    if _native_cache is None:
        _native_cache = _native_status()
    return _native_cache


def is_sage_queue_available() -> bool:
    return _native()[0]


def is_ray_queue_available() -> bool:
    return "ray" in sys.modules or importlib.util.find_spec("ray") is not None


_AVAILABLE = {
    "sage_queue": is_sage_queue_available,
    "ray_queue": is_ray_queue_available,
    "python_queue": lambda: True,
}


def get_recommended_queue_backend() -> tuple[str, str]:
    """(backend, reason) that auto picks on this machine."""
    if is_sage_queue_available():
        return "sage_queue", "the native sage_queue extension is built"
    if is_ray_queue_available():
        return "ray_queue", "the native sage_queue extension is not built; Ray is installed"
    return "python_queue", "neither the native sage_queue extension nor Ray is installed"


def get_queue_backends() -> dict:
    """Every backend with its availability, capabilities and how to install it."""
    return {
        name: dict(available=_AVAILABLE[name](), summary=spec.summary,
                   capabilities=dict(spec.capabilities), install_hint=spec.install_hint)
        for name, spec in BACKENDS.items()
    }


def _resolve(backend: str | None, config: QueueConfig) -> tuple[str, str]:
    """(canonical backend, why) for an explicit name or the configuration."""
    if backend is not None:
        key = backend.strip().lower() if isinstance(backend, str) else backend
        name = normalize_backend_name(backend, source="create_queue(backend=...)")
        if key in LEGACY_BACKEND_NAMES:
            warnings.warn(
                f"queue backend {backend!r} is deprecated; use {name!r}",
                DeprecationWarning, stacklevel=3,
            )
        if name != "auto":
            return name, "named by the caller"
    if config.backend != "auto":
        return config.backend, f"configured ({config.sources.get('backend', 'default')})"
    return get_recommended_queue_backend()


_CONFIGURED: object = object()  # an argument of create_queue left to the configuration


def create_queue(backend: str | None = None, *, name: str | None = None,
                 maxsize: int | None = None, fallback: str | None = None,
                 config: QueueConfig | None = None, put_timeout: float | None = _CONFIGURED,
                 get_timeout: float | None = _CONFIGURED, **options):
    """A queue of the chosen backend. ``name`` reaches the same queue on every call.

    ``maxsize``, ``put_timeout`` and ``get_timeout`` default to the configuration's; the
    timeouts are what the queue's put/put_many and get/get_many wait when their caller
    passes no timeout (None: without limit). options: ``capacity_bytes`` and
    ``persistent`` (sage_queue), ``namespace`` and ``address`` (ray_queue). ``fallback``:
    a backend to use, with a warning, when the chosen one is not installed.
    """
    config = config or load_config()
    chosen, _ = _resolve(backend, config)
    if not _AVAILABLE[chosen]():
        spec = BACKENDS[chosen]
        problem = f"queue backend {chosen!r} is not installed: {spec.install_hint}"
        if chosen == "sage_queue" and _native()[1]:
            problem += f" (import error: {_native()[1]})"
        if fallback is None:
            raise BackendUnavailableError(problem)
        fallback_name = normalize_backend_name(fallback, source="fallback")
        if fallback_name == "auto":
            fallback_name = get_recommended_queue_backend()[0]
        if not _AVAILABLE[fallback_name]():
            raise BackendUnavailableError(
                f"{problem}; the fallback {fallback_name!r} is not installed either"
            )
        warnings.warn(f"{problem}; falling back to {fallback_name!r} as asked", RuntimeWarning,
                      stacklevel=2)
        chosen = fallback_name
    maxsize = config.maxsize if maxsize is None else maxsize
    timeouts = dict(
        put_timeout=config.put_timeout if put_timeout is _CONFIGURED else put_timeout,
        get_timeout=config.get_timeout if get_timeout is _CONFIGURED else get_timeout,
    )
    return _FACTORIES[chosen](name, maxsize, config, options, timeouts)


def _check_options(backend: str, options: dict, allowed: set) -> None:
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(
            f"{backend} does not take {sorted(unknown)}; it takes {sorted(allowed) or 'no options'}"
        )


def _make_sage(name, maxsize, config, options, timeouts):
    _check_options("sage_queue", options, {"capacity_bytes", "persistent"})
    from sage_ext.sage_queue.python.sage_queue import SageQueue

    return SageQueue(name, maxsize=maxsize,
                     capacity_bytes=options.get("capacity_bytes", config.capacity_bytes),
                     persistent=options.get("persistent", False), **timeouts)


def _make_ray(name, maxsize, config, options, timeouts):
    _check_options("ray_queue", options, {"namespace", "address"})
    from .ray_queue import RayQueue

    return RayQueue(name, maxsize, namespace=options.get("namespace", config.ray_namespace),
                    address=options.get("address", config.ray_address), **timeouts)


def _make_python(name, maxsize, config, options, timeouts):
    _check_options("python_queue", options, set())
    from .python_queue import PythonQueue

    return PythonQueue.named(name, maxsize, **timeouts)


_FACTORIES = {"sage_queue": _make_sage, "ray_queue": _make_ray, "python_queue": _make_python}


def get_queue_backend_info(config: QueueConfig | None = None) -> dict:
    """What create_queue() would do here, and why: for `sage info` and for support."""
    config = config or load_config()
    current, reason = _resolve(None, config)
    works, error, path = _native()
    profile = read_profile()
    return {
        "current_backend": current,
        "reason": reason,
        "backends": list(BACKEND_NAMES),
        "available": {name: check() for name, check in _AVAILABLE.items()},
        "details": get_queue_backends(),
        "native_extension": {"available": works, "error": error, "path": path},
        "profile": profile.get("profile") if profile else None,
        "profile_file": profile,
        "settings": {
            field.name: {"value": getattr(config, field.name), "source": config.sources.get(field.name)}
            for field in dataclasses.fields(config) if field.name != "sources"
        },
        "python": sys.version.split()[0],
    }
