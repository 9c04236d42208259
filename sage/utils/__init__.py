"""The SAGE queue layer: one queue interface over sage_queue, ray_queue and python_queue."""

from .errors import BackendUnavailableError, QueueClosed
from .queue_adapter import (
    create_queue,
    get_queue_backend_info,
    get_queue_backends,
    get_recommended_queue_backend,
    is_ray_queue_available,
    is_sage_queue_available,
)
from .queue_config import QueueConfig, load_config
from .queue_contract import BackendStats, QueueProtocol

__all__ = [
    "BackendStats",
    "BackendUnavailableError",
    "QueueClosed",
    "QueueConfig",
    "QueueProtocol",
    "create_queue",
    "get_queue_backend_info",
    "get_queue_backends",
    "get_recommended_queue_backend",
    "is_ray_queue_available",
    "is_sage_queue_available",
    "load_config",
]
