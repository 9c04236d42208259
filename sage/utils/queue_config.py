"""QueueConfig: the queue layer's settings and where each one came from.

Sources, later ones winning: built-in defaults, the profile recorded by install.py
(``<sys.prefix>/sage-profile.json``), a TOML file (``SAGE_QUEUE_CONFIG`` or
``./sage.toml``, table ``[queue]``), then environment variables ``SAGE_QUEUE_*``.
A bad value is a ValueError that names its source and the valid values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "QueueConfig",
    "load_config",
    "normalize_backend_name",
    "BACKEND_NAMES",
    "BACKEND_ALIASES",
    "PROFILE_FILE_NAME",
    "profile_path",
]

BACKEND_NAMES = ("sage_queue", "ray_queue", "python_queue")
BACKEND_ALIASES = {"sage": "sage_queue", "ray": "ray_queue", "python": "python_queue"}
LEGACY_BACKEND_NAMES = {"sage_mmap_queue": "sage_queue"}
PROFILE_FILE_NAME = "sage-profile.json"
ENV_PREFIX = "SAGE_QUEUE_"


def normalize_backend_name(name: str, *, source: str = "backend") -> str:
    """Map 'auto', full names and short names to the canonical name; ValueError otherwise.

    The legacy name 'sage_mmap_queue' is accepted here; the adapter warns about it.
    """
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a str, not {type(name).__name__}")
    key = name.strip().lower()
    if key == "auto" or key in BACKEND_NAMES:
        return key
    if key in BACKEND_ALIASES:
        return BACKEND_ALIASES[key]
    if key in LEGACY_BACKEND_NAMES:
        return LEGACY_BACKEND_NAMES[key]
    valid = ", ".join(("auto", *BACKEND_NAMES, *BACKEND_ALIASES))
    raise ValueError(f"{source}: unknown queue backend {name!r}; valid values: {valid}")


def _non_negative_int(value, source: str) -> int:
    # int() would truncate a TOML float (4.7 -> 4) and take a bool: neither is a count.
    if isinstance(value, (bool, float)):
        raise ValueError(f"{source}: expected a whole number >= 0, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expected a whole number >= 0, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{source}: expected a whole number >= 0, got {value!r}")
    return number


def _positive_int(value, source: str) -> int:
    number = _non_negative_int(value, source)
    if number == 0:
        raise ValueError(f"{source}: expected a whole number > 0, got {value!r}")
    return number


def _timeout(value, source: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, bool):  # float(True) is 1.0: a TOML `true` is not a duration
        raise ValueError(f"{source}: expected seconds >= 0 or 'none', got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expected seconds >= 0 or 'none', got {value!r}") from None
    if number < 0 or number != number:
        raise ValueError(f"{source}: expected seconds >= 0 or 'none', got {value!r}")
    return number


def _optional_str(value, source: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{source}: expected a string, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class QueueConfig:
    """Settings of the queue layer. ``sources`` maps each field to where its value came from."""

    backend: str = "auto"  #: auto, sage_queue, ray_queue or python_queue
    maxsize: int = 0  #: items per queue, 0 = unbounded (sage_queue: bounded by capacity_bytes)
    capacity_bytes: int = 8 << 20  #: sage_queue ring size
    put_timeout: float | None = None  #: default put timeout in seconds, None = block
    get_timeout: float | None = None  #: default get timeout in seconds, None = block
    ray_address: str | None = None  #: Ray cluster to join; None starts a local one on 127.0.0.1
    ray_namespace: str = "sage"  #: Ray namespace of named queue actors
    sources: dict = dataclasses.field(default_factory=dict, compare=False)

    def with_overrides(self, **changes) -> QueueConfig:
        sources = dict(self.sources)
        for key in changes:
            sources[key] = "argument"
        return dataclasses.replace(self, sources=sources, **changes)


# field -> (parser, environment variable)
_FIELDS = {
    "backend": (lambda v, s: normalize_backend_name(v, source=s), "SAGE_QUEUE_BACKEND"),
    "maxsize": (_non_negative_int, "SAGE_QUEUE_MAXSIZE"),
    "capacity_bytes": (_positive_int, "SAGE_QUEUE_CAPACITY_BYTES"),
    "put_timeout": (_timeout, "SAGE_QUEUE_PUT_TIMEOUT"),
    "get_timeout": (_timeout, "SAGE_QUEUE_GET_TIMEOUT"),
    "ray_address": (_optional_str, "SAGE_QUEUE_RAY_ADDRESS"),
    "ray_namespace": (_optional_str, "SAGE_QUEUE_RAY_NAMESPACE"),
}
_NON_SETTINGS = {"SAGE_QUEUE_CONFIG"}  # names the file; not a setting


def profile_path(prefix: str | None = None) -> Path:
    """Where install.py records the profile of the environment at ``prefix``."""
    return Path(prefix or sys.prefix) / PROFILE_FILE_NAME


def read_profile(prefix: str | None = None) -> dict | None:
    path = profile_path(prefix)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable install profile ({exc}); rerun install.py") from None


def _config_file(environ) -> Path | None:
    explicit = environ.get("SAGE_QUEUE_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ValueError(f"SAGE_QUEUE_CONFIG: no such file {explicit!r}")
        return path
    default = Path.cwd() / "sage.toml"
    return default if default.is_file() else None


def load_config(environ=None, prefix: str | None = None) -> QueueConfig:
    """Build the effective QueueConfig from every source, recording where each value came from."""
    environ = os.environ if environ is None else environ
    values = {}
    sources = {name: "default" for name in _FIELDS}

    profile = read_profile(prefix)
    if profile and profile.get("queue_backend"):
        where = f"profile {profile_path(prefix)}"
        values["backend"] = normalize_backend_name(profile["queue_backend"], source=where)
        sources["backend"] = where

    path = _config_file(environ)
    if path is not None:
        try:
            table = tomllib.loads(path.read_text()).get("queue", {})
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML ({exc})") from None
        unknown = set(table) - set(_FIELDS)
        if unknown:
            raise ValueError(
                f"{path}: unknown [queue] keys {sorted(unknown)}; valid keys: {sorted(_FIELDS)}"
            )
        for key, raw in table.items():
            values[key] = _FIELDS[key][0](raw, f"{path} [queue] {key}")
            sources[key] = f"file {path}"

    known_env = {env for _, env in _FIELDS.values()} | _NON_SETTINGS
    stray = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known_env)
    if stray:
        raise ValueError(
            f"unknown environment variable {stray[0]}; the queue layer reads {sorted(known_env)}"
        )
    for key, (parse, env) in _FIELDS.items():
        if env in environ:
            values[key] = parse(environ[env], env)
            sources[key] = f"env {env}"

    return QueueConfig(**values, sources=sources)
