"""BaseEnvironment: declares a pipeline (sources, services); subclasses run it.

Declaring only records nodes of a graph; nothing runs until ``submit()``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import itertools

from sage.core.function.base_function import BaseFunction
from sage.core.function.lambda_function import BASE_CLASS_OF_KIND, is_function_class
from sage.runtime.plan import Node, ServiceDecl

__all__ = ["BaseEnvironment", "describe_function", "options_from"]


def options_from(config: dict, cls):
    """The options dataclass ``cls`` from a config dict; unknown keys are an error."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(config) - set(names))
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; valid: {', '.join(names)}")
    return cls(**config)


def describe_function(kind: str, function) -> str:
    """A default operator name: the class or function name, else the kind."""
    if isinstance(function, type):
        return function.__name__
    if isinstance(function, BaseFunction):
        return type(function).__name__
    name = getattr(function, "__name__", "")
    if name and name != "<lambda>":
        return name
    return kind


def check_function(kind: str, function, inputs: int = 1) -> None:
    """Reject at declaration what could only fail inside a task."""
    if kind == "comap" and isinstance(function, (list, tuple)):
        if len(function) != inputs:
            raise ValueError(f"comap over {inputs} inputs needs {inputs} functions, "
                             f"got {len(function)}")
        if not all(callable(fn) for fn in function):
            raise TypeError("comap: every function must be callable")
        return
    if kind == "comap" and isinstance(function, type):
        base = BASE_CLASS_OF_KIND["comap"]
        missing = [f"map{i}" for i in range(inputs)
                   if getattr(function, f"map{i}", None) in (None, getattr(base, f"map{i}"))]
        if missing or not issubclass(function, base):
            raise TypeError(f"comap over {inputs} inputs: {function.__name__} must derive from "
                            f"BaseCoMapFunction and define map0..map{inputs - 1}")
        return
    if not callable(function) and not isinstance(function, BaseFunction):
        raise TypeError(f"{kind}: expected a function class or a callable, "
                        f"got {type(function).__name__}")


class BaseEnvironment:
    def __init__(self, name: str = "local", *, config: dict | None = None):
        self.name = name
        self.config = dict(config or {})
        self._nodes: list[Node] = []
        self._services: list[ServiceDecl] = []
        self._ids = itertools.count()
        self._names: set = set()
        self.job = None  # the Job (or RayJob) of the last submit()

    # -- declaring --------------------------------------------------------------------

    def _unique_name(self, wanted: str) -> str:
        name, n = wanted, 1
        while name in self._names:
            n += 1
            name = f"{wanted}_{n}"
        self._names.add(name)
        return name

    def _add(self, kind: str, function, args: tuple = (), kwargs: dict | None = None, *,
             inputs: list | None = None, parallelism: int = 1, name: str | None = None,
             routing: str = "round_robin", delay: float | None = None):
        from .datastream import DataStream

        if not isinstance(parallelism, int) or parallelism < 1:
            raise ValueError(f"parallelism must be an int >= 1, got {parallelism!r}")
        if name is not None and name in self._names:
            raise ValueError(f"an operator named {name!r} exists already in {self.name!r}")
        if (args or kwargs) and kind not in ("print", "collection") and not (
                kind == "comap" and isinstance(function, type)) and not is_function_class(
                kind, function):
            raise TypeError(f"{kind}: arguments {args or ''}{kwargs or ''} go to a function "
                            f"class's constructor; {describe_function(kind, function)!r} is a "
                            "plain callable (bind them with functools.partial or a closure)")
        node = Node(id=next(self._ids), kind=kind,
                    name=self._unique_name(name or describe_function(kind, function)),
                    function=function, args=tuple(args), kwargs=dict(kwargs or {}),
                    parallelism=parallelism, inputs=list(inputs or []), routing=routing,
                    delay=delay)
        self._nodes.append(node)
        return DataStream(self, node)

    def from_batch(self, function, *args, parallelism: int = 1, name: str | None = None,
                   **kwargs):
        """A finite source: a BatchFunction class (``execute()`` returning None ends it), a
        callable used as its execute, a generator function (called once with the
        arguments; its items), or any iterable (its items)."""
        if inspect.isgeneratorfunction(function):
            return self.from_collection(function(*args, **kwargs), parallelism=parallelism,
                                        name=name or describe_function("batch", function))
        if isinstance(function, type) or callable(function):
            check_function("batch", function)
            return self._add("batch", function, args, kwargs, parallelism=parallelism, name=name)
        return self.from_collection(function, parallelism=parallelism, name=name)

    def from_collection(self, items, *, parallelism: int = 1, name: str | None = None):
        """A finite source of the items of an iterable (with parallelism p, instance i
        takes items i, i+p, ...: then it must be a sequence)."""
        if not isinstance(items, collections.abc.Iterable):
            raise TypeError(f"from_collection needs an iterable, got {type(items).__name__}")
        if parallelism > 1 and not isinstance(items, collections.abc.Sequence):
            raise ValueError("from_collection with parallelism > 1 needs a sequence (a list, "
                             "a tuple, a range): every instance reads its own share of it")
        return self._add("collection", items, parallelism=parallelism, name=name)

    from_batch_collection = from_collection  # SAGE's name

    def from_source(self, function, *args, delay: float | None = None, parallelism: int = 1,
                    name: str | None = None, **kwargs):
        """A source: a SourceFunction class (or callable) called until the job stops or it
        returns a StopSignal; None means no item this call. ``delay``: seconds between calls."""
        if delay is not None and delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay}")
        check_function("source", function)
        return self._add("source", function, args, kwargs, parallelism=parallelism, name=name,
                         delay=delay or None)

    def register_service(self, name: str, cls, *args, **kwargs) -> None:
        """A service any function can call as ``self.call_service[name].method(...)``; the
        class is constructed inside its own task with these arguments."""
        if not isinstance(cls, type):
            raise TypeError(f"register_service needs a class, got {type(cls).__name__}")
        if any(s.name == name for s in self._services):
            raise ValueError(f"a service named {name!r} is registered already")
        self._services.append(ServiceDecl(name, cls, tuple(args), dict(kwargs)))

    def place_service(self, name: str, **resources) -> None:
        """RemoteEnvironment: run service ``name`` on a Ray node with these resources (as
        DataStream.place does for operators); LocalEnvironment ignores it."""
        from .datastream import check_resources

        check_resources(resources)
        for position, decl in enumerate(self._services):
            if decl.name == name:
                self._services[position] = dataclasses.replace(decl, resources=dict(resources))
                return
        known = ", ".join(s.name for s in self._services) or "none"
        raise KeyError(f"no service named {name!r} is registered (registered: {known})")

    @property
    def pipeline(self) -> list:
        """The declared nodes, in declaration order."""
        return list(self._nodes)

    # -- the submitted job (submit() is the subclass's) ------------------------------------

    def run_streaming(self) -> None:
        """SAGE called this after submit(); the job already runs, so it does nothing."""

    def wait(self, timeout: float | None = None):
        """Block until the job ends by itself (its sources are finite); JobFailedError if a
        task failed."""
        return self._running("wait").wait(timeout)

    def stop(self, timeout: float | None = None):
        """End the sources, deliver everything in flight to the sinks, then tear down."""
        job = self._running("stop")
        try:
            return job.stop(timeout)
        finally:
            job.close()

    def close(self) -> None:
        """Stop if running, then free everything the job started. Idempotent."""
        if self.job is not None:
            self.job.close()

    def metrics(self) -> list:
        """Live counters of each operator instance: items in, out, errors, input queue depth."""
        return self._running("metrics").metrics()

    def _running(self, what: str):
        if self.job is None:
            raise RuntimeError(f"{what}(): nothing was submitted in {self.name!r}")
        return self.job

    def _check_not_running(self) -> None:
        if self.job is not None and self.job.state in ("created", "running"):
            raise RuntimeError(f"environment {self.name!r} is running a job already; "
                               "stop() or close() it first")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
