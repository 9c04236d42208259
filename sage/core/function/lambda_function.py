"""Plain callables (lambdas, functions) wrapped as function classes of each kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .base_function import BaseFunction
from .batch_function import BatchFunction
from .comap_function import BaseCoMapFunction
from .filter_function import FilterFunction
from .flatmap_function import FlatMapFunction
from .join_function import BaseJoinFunction
from .keyby_function import KeyByFunction
from .map_function import MapFunction
from .sink_function import SinkFunction
from .source_function import SourceFunction

__all__ = ["wrap_callable", "execute_of", "is_function_class", "LambdaCoMapFunction",
           "BASE_CLASS_OF_KIND"]


def is_function_class(kind: str, function) -> bool:
    """A class with the kind's method is a function class; any other class (``str``,
    ``int``) is a plain callable applied to each item."""
    method = "map0" if kind == "comap" else "execute"
    return isinstance(function, type) and callable(getattr(function, method, None))


def _callable_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class _LambdaMixin:
    def __init__(self, fn: Callable):
        self.fn = fn

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_callable_name(self.fn)})"


class LambdaMapFunction(_LambdaMixin, MapFunction):
    def execute(self, data):
        return self.fn(data)


class LambdaFilterFunction(_LambdaMixin, FilterFunction):
    def execute(self, data):
        return self.fn(data)


class LambdaFlatMapFunction(_LambdaMixin, FlatMapFunction):
    def execute(self, data):
        return self.fn(data)


class LambdaSinkFunction(_LambdaMixin, SinkFunction):
    def execute(self, data):
        self.fn(data)


class LambdaKeyByFunction(_LambdaMixin, KeyByFunction):
    def execute(self, data):
        return self.fn(data)


class LambdaSourceFunction(_LambdaMixin, SourceFunction):
    def execute(self):
        return self.fn()


class LambdaBatchFunction(_LambdaMixin, BatchFunction):
    def execute(self):
        return self.fn()


class LambdaJoinFunction(_LambdaMixin, BaseJoinFunction):
    def execute(self, payload, key, tag):
        return self.fn(payload, key, tag)


class LambdaCoMapFunction(BaseCoMapFunction):
    """One callable per input: ``comap([f0, f1])`` or ``comap(f0, f1)``."""

    def __init__(self, fns: Sequence[Callable]):
        self.fns = list(fns)

    def map0(self, data: Any) -> Any:
        return self.fns[0](data)

    def map1(self, data: Any) -> Any:
        return self.fns[1](data)

    def map2(self, data: Any) -> Any:
        return self.fns[2](data)

    def map3(self, data: Any) -> Any:
        return self.fns[3](data)

    def map4(self, data: Any) -> Any:
        return self.fns[4](data)


_WRAPPERS = {
    "map": LambdaMapFunction, "filter": LambdaFilterFunction, "flatmap": LambdaFlatMapFunction,
    "sink": LambdaSinkFunction, "keyby": LambdaKeyByFunction, "source": LambdaSourceFunction,
    "batch": LambdaBatchFunction, "join": LambdaJoinFunction,
}

# What a class given for each kind must be (checked at declaration, so mistakes show early).
BASE_CLASS_OF_KIND = {
    "map": MapFunction, "filter": FilterFunction, "flatmap": FlatMapFunction,
    "sink": SinkFunction, "keyby": KeyByFunction, "source": SourceFunction,
    "batch": BatchFunction, "join": BaseJoinFunction, "comap": BaseCoMapFunction,
}


def wrap_callable(kind: str, fn: Callable) -> BaseFunction:
    """A function instance of ``kind`` that calls ``fn``."""
    return _WRAPPERS[kind](fn)


def execute_of(function: BaseFunction) -> Callable:
    """What to call per item: a wrapped callable itself (one call less per item), else the
    function's execute."""
    if isinstance(function, _LambdaMixin):
        return function.fn
    return function.execute
