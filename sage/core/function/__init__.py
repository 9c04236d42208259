"""The function classes of SAGE pipelines; each also importable from its own module."""

from .base_function import BaseFunction
from .base_service import BaseService
from .batch_function import BatchFunction
from .comap_function import BaseCoMapFunction
from .filter_function import FilterFunction
from .flatmap_function import FlatMapFunction
from .join_function import BaseJoinFunction
from .keyby_function import KeyByFunction
from .map_function import MapFunction
from .sink_function import SinkFunction
from .source_function import SourceFunction, StopSignal

__all__ = [
    "BaseCoMapFunction",
    "BaseFunction",
    "BaseJoinFunction",
    "BaseService",
    "BatchFunction",
    "FilterFunction",
    "FlatMapFunction",
    "KeyByFunction",
    "MapFunction",
    "SinkFunction",
    "SourceFunction",
    "StopSignal",
]
