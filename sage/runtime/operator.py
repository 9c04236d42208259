"""Operators: how each kind of function turns its input into output for the router.

A task builds one operator per instance: it instantiates the function class (or wraps a
plain callable) inside the task, sets its ``ctx``, then hands it each batch its input
queue gives (``process``; sources: ``produce``) and, at the end, calls ``finish``.
"""

from __future__ import annotations

import copy
import inspect
import itertools
import sys
from collections.abc import Callable

from sage.core.function.base_function import BaseFunction
from sage.core.function.lambda_function import (
    LambdaCoMapFunction,
    execute_of,
    is_function_class,
    wrap_callable,
)
from sage.core.function.source_function import StopSignal

from .router.packet import EndOfStream

__all__ = ["build_operator", "SOURCE_KINDS"]

SOURCE_KINDS = ("collection", "batch", "source")


def _accepts_name(cls: type) -> bool:
    """SAGE passed ``name=`` on to function classes; do so where the constructor takes it."""
    try:
        params = inspect.signature(cls.__init__).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "name" for p in params)


def _own_copy(kind: str, function: BaseFunction) -> BaseFunction:
    """One object per instance, deep: parallel instances (threads) share no mutable state."""
    try:
        return copy.deepcopy(function)
    except Exception as exc:  # noqa: BLE001 - whatever copying raised, the fix is the same
        cls = type(function).__name__
        raise TypeError(
            f"{kind}: the {cls} object cannot be copied for each instance "
            f"({type(exc).__name__}: {exc}); pass the class instead, with its arguments "
            f"(e.g. .{kind}({cls}, arg, ...)), so each instance constructs its own") from exc


def instantiate(kind: str, function, args: tuple, kwargs: dict, name: str):
    """The function object one instance runs: a class is constructed here, in the task."""
    if is_function_class(kind, function):
        if "name" not in kwargs and _accepts_name(function):
            kwargs = dict(kwargs, name=name)
        return function(*args, **kwargs)
    if kind == "comap" and isinstance(function, (list, tuple)):
        return LambdaCoMapFunction(function)
    if isinstance(function, BaseFunction):
        return _own_copy(kind, function)
    if callable(function):
        return wrap_callable(kind, function)
    raise TypeError(f"{kind}: expected a function class or a callable, got {type(function).__name__}")


class Operator:
    """``process(batch)`` runs the function on a batch from the input queue and returns how
    many end markers it held. Most operators get bare payloads; each kind has its own loop,
    as this is the per-item path. TaggedOperator (comap, join) gets (input, payload, key)."""

    ended = False  # sources: set once produce() found the stream's end

    def __init__(self, function, router):
        self.function = function
        self.router = router
        self.emit = router.emit
        self.chained = hasattr(router, "hand_on")  # emits into a ChainLink, not a Router
        # an iterable's items; chained, a full batch at a time (bounded memory, as a queue)
        self.emit_all = router.emit_all if self.chained else self._emit_each
        self.execute = execute_of(function) if function is not None else None

    def on_item(self, input_index: int, payload, key) -> None:
        raise NotImplementedError

    def _emit_each(self, items) -> None:
        emit = self.emit
        for item in items:
            emit(item)

    def finish(self) -> None:
        """The function's finish(): what it returns is emitted before the end markers."""
        finish = getattr(self.function, "finish", None)
        results = finish() if callable(finish) else None
        if results is not None:
            self.emit_all(results)

    def process(self, batch: list) -> int:
        ends = 0
        on_item, end = self.on_item, EndOfStream
        for item in batch:
            if type(item) is end:
                ends += 1
            else:
                on_item(0, item, None)
        return ends


class TaggedOperator(Operator):
    def process(self, batch: list) -> int:
        ends = 0
        on_item = self.on_item
        for input_index, payload, key in batch:
            if input_index < 0:
                ends += 1
            else:
                on_item(input_index, payload, key)
        return ends


class MapOperator(Operator):
    def process(self, batch):
        ends = 0
        execute, emit, end = self.execute, self.emit, EndOfStream
        for item in batch:
            if type(item) is end:
                ends += 1
                continue
            result = execute(item)
            if result is not None:
                emit(result)
        return ends


class FilterOperator(Operator):
    def process(self, batch):
        ends = 0
        execute, emit, end = self.execute, self.emit, EndOfStream
        for item in batch:
            if type(item) is end:
                ends += 1
            elif execute(item):
                emit(item)
        return ends


class FlatMapOperator(Operator):
    def on_item(self, input_index, payload, key):
        results = self.execute(payload)
        take = getattr(self.function, "take_collected", None)
        if take is not None:
            self.emit_all(take())
        if results is not None:
            self.emit_all(results)  # one input may give any number of items


class SinkOperator(Operator):
    def process(self, batch):
        ends = 0
        execute, end = self.execute, EndOfStream
        for item in batch:
            if type(item) is end:
                ends += 1
            else:
                execute(item)
        return ends


class KeyByOperator(Operator):
    def process(self, batch):
        ends = 0
        execute, emit, end = self.execute, self.emit, EndOfStream
        if self.chained:  # the one next instance takes every key
            for item in batch:
                if type(item) is end:
                    ends += 1
                else:
                    execute(item)  # still the user's code: its errors and effects stay
                    emit(item)
            return ends
        for item in batch:
            if type(item) is end:
                ends += 1
            else:
                emit(item, execute(item))
        return ends


class PrintOperator(Operator):
    def __init__(self, function, router, prefix: str = ""):
        super().__init__(function, router)
        self.prefix = prefix

    def on_item(self, input_index, payload, key):
        line = f"{self.prefix}: {payload}\n" if self.prefix else f"{payload}\n"
        out = sys.stdout
        out.write(line)  # one write per line: lines of several processes never interleave
        out.flush()
        self.emit(payload)


class CoMapOperator(TaggedOperator):
    def __init__(self, function, router):
        super().__init__(function, router)
        if isinstance(function, LambdaCoMapFunction):
            self.maps = list(function.fns)
        else:
            self.maps = [getattr(function, f"map{i}") for i in range(5)]

    def on_item(self, input_index, payload, key):
        result = self.maps[input_index](payload)
        if result is not None:
            self.emit(result)


class JoinOperator(TaggedOperator):
    def on_item(self, input_index, payload, key):
        results = self.execute(payload, key, input_index)
        if results:
            self.emit_all(results)  # one input may give any number of items


class CollectionSource(Operator):
    """Items of an iterable; instance i of p takes items i, i+p, i+2p, ..."""

    def __init__(self, items, router, index: int, parallelism: int):
        super().__init__(None, router)
        self._items = iter(items) if parallelism == 1 else itertools.islice(
            items, index, None, parallelism)

    def produce(self, max_items: int) -> int:
        count = 0
        emit = self.emit
        for item in itertools.islice(self._items, max_items):
            emit(item)
            count += 1
        if count < max_items:
            self.ended = True
        return count


class BatchSource(Operator):
    """A BatchFunction: None from execute() ends the stream."""

    def produce(self, max_items: int) -> int:
        """Emit up to max_items; the count emitted."""
        execute, emit = self.execute, self.emit
        for count in range(max_items):
            item = execute()
            if item is None or isinstance(item, StopSignal):
                self.ended = True
                return count
            emit(item)
        return max_items


class FunctionSource(Operator):
    """A SourceFunction: called until the job stops or it returns a StopSignal; None: no item."""

    def produce(self, max_items: int) -> int:
        execute, emit = self.execute, self.emit
        count = 0
        for _ in range(max_items):
            item = execute()
            if isinstance(item, StopSignal):
                self.ended = True
                return count
            if item is None:
                break  # nothing now: let the task flush and pause
            emit(item)
            count += 1
        return count


_OPERATORS: dict[str, Callable] = {
    "map": MapOperator, "filter": FilterOperator, "flatmap": FlatMapOperator,
    "sink": SinkOperator, "keyby": KeyByOperator, "comap": CoMapOperator, "join": JoinOperator,
    "batch": BatchSource, "source": FunctionSource,
}


def build_operator(node, index: int, router, ctx) -> Operator:
    """The operator of instance ``index`` of ``node`` (a plan Node), its function made here."""
    if node.kind == "collection":
        return CollectionSource(node.function, router, index, node.parallelism)
    if node.kind == "print":
        return PrintOperator(None, router, prefix=node.kwargs.get("prefix", ""))
    function = instantiate(node.kind, node.function, node.args, node.kwargs, node.name)
    try:
        function.ctx = ctx
    except AttributeError:  # a callable object that refuses attributes still works
        pass
    return _OPERATORS[node.kind](function, router)
