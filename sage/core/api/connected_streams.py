"""ConnectedStreams: up to five streams as inputs 0..4 of one transformation.

``map``/``filter``/``sink``/``print`` see every input's items; ``comap`` maps each input
with its own function (``map0``..``map4`` of a BaseCoMapFunction, or one callable per
input); ``keyby(fn0, fn1, ...)`` keys each input; ``join`` gets keyed inputs as
``execute(payload, key, tag)``. The transformation finishes only when every input has
ended, whenever each one does.
"""

from __future__ import annotations

from sage.runtime.plan import MAX_INPUTS

from .base_environment import check_function
from .datastream import DataStream

__all__ = ["ConnectedStreams"]


class ConnectedStreams:
    def __init__(self, env, streams: list):
        if len(streams) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} streams can be connected, got {len(streams)}")
        for stream in streams:
            if stream.env is not env:
                raise ValueError("streams of different environments cannot be connected")
        self.env = env
        self.streams = list(streams)

    def connect(self, other) -> ConnectedStreams:
        more = other.streams if isinstance(other, ConnectedStreams) else [other]
        for stream in more:
            if not isinstance(stream, DataStream):
                raise TypeError(f"connect() takes a DataStream or ConnectedStreams, "
                                f"got {type(stream).__name__}")
        return ConnectedStreams(self.env, self.streams + list(more))

    def _inputs(self) -> list:
        return [s.node for s in self.streams]

    def _all(self, kind, function, args, kwargs, parallelism, name):
        check_function(kind, function, len(self.streams))
        return self.env._add(kind, function, args, kwargs, inputs=self._inputs(),
                             parallelism=parallelism, name=name)

    def map(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        return self._all("map", function, args, kwargs, parallelism, name)

    def filter(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        return self._all("filter", function, args, kwargs, parallelism, name)

    def sink(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        return self._all("sink", function, args, kwargs, parallelism, name)

    def print(self, prefix: str = "", *, parallelism: int = 1, name: str | None = None):
        return self.env._add("print", None, (), {"prefix": prefix}, inputs=self._inputs(),
                             parallelism=parallelism, name=name)

    def comap(self, *functions, parallelism: int = 1, name: str | None = None, **kwargs):
        """``comap(CoMapClass, ...)``, ``comap([f0, f1, ...])`` or ``comap(f0, f1, ...)``."""
        if len(self.streams) < 2:
            raise ValueError("comap needs at least two connected streams")
        if len(functions) == 1 and isinstance(functions[0], type):
            function, args = functions[0], ()
        elif len(functions) == 1 and isinstance(functions[0], (list, tuple)):
            function, args = list(functions[0]), ()
        elif functions and all(callable(f) and not isinstance(f, type) for f in functions):
            function, args = list(functions), ()
        else:
            raise TypeError("comap takes a BaseCoMapFunction class, a list of callables, "
                            "or one callable per input")
        check_function("comap", function, len(self.streams))
        return self.env._add("comap", function, args, kwargs, inputs=self._inputs(),
                             parallelism=parallelism, name=name)

    def keyby(self, *functions, strategy: str = "hash", parallelism: int = 1) -> ConnectedStreams:
        """One key function per input (or one for all)."""
        if len(functions) == 1 and isinstance(functions[0], (list, tuple)):
            functions = tuple(functions[0])
        if len(functions) == 1:
            functions = functions * len(self.streams)
        if len(functions) != len(self.streams):
            raise ValueError(f"keyby over {len(self.streams)} inputs needs {len(self.streams)} "
                             f"key functions, got {len(functions)}")
        return ConnectedStreams(self.env, [
            s.keyby(f, strategy=strategy, parallelism=parallelism)
            for s, f in zip(self.streams, functions, strict=True)])

    def join(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        """``execute(payload, key, tag)`` over keyed inputs; items of one key meet in one
        instance. Key the inputs first (each stream's keyby, or this keyby)."""
        unkeyed = [s.name for s in self.streams if s.node.kind != "keyby"]
        if unkeyed:
            raise ValueError(f"join needs keyed inputs; key these first with keyby(): "
                             f"{', '.join(unkeyed)}")
        return self._all("join", function, args, kwargs, parallelism, name)

    def __repr__(self) -> str:
        return f"ConnectedStreams({', '.join(s.name for s in self.streams)})"

