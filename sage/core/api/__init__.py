"""SAGE's pipeline API: environments and streams (each also importable from its module)."""

from sage.runtime.errors import JobFailedError

from .connected_streams import ConnectedStreams
from .datastream import DataStream
from .local_environment import LocalEnvironment
from .remote_environment import RemoteEnvironment

__all__ = ["ConnectedStreams", "DataStream", "JobFailedError", "LocalEnvironment",
           "RemoteEnvironment"]
