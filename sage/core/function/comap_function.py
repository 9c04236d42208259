"""BaseCoMapFunction: connected streams mapped input by input (``map0`` .. ``map4``)."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from .base_function import BaseFunction

__all__ = ["BaseCoMapFunction"]


class BaseCoMapFunction(BaseFunction):
    """``mapN(item)`` handles items of input N; a None result is not passed on."""

    is_comap = True

    @abstractmethod
    def map0(self, data: Any) -> Any: ...

    @abstractmethod
    def map1(self, data: Any) -> Any: ...

    def map2(self, data: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no map2 (a third input)")

    def map3(self, data: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no map3 (a fourth input)")

    def map4(self, data: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no map4 (a fifth input)")

    def execute(self, data: Any) -> Any:
        raise NotImplementedError("a CoMap function is called through map0..map4, not execute()")
