"""BaseService: a service registered with ``env.register_service(name, cls, ...)``.

Any class can be a service; this base gives it ``self.ctx``, ``self.logger`` and
``self.call_service`` so services can call other services.
"""

from __future__ import annotations

import logging

__all__ = ["BaseService"]


class BaseService:
    ctx = None  # the service's TaskContext, set by the runtime

    def __init__(self, *args, **kwargs):
        pass

    @property
    def name(self) -> str:
        return self.ctx.name if self.ctx is not None else type(self).__name__

    @property
    def logger(self) -> logging.Logger:
        if self.ctx is not None:
            return self.ctx.logger
        return logging.getLogger(f"sage.service.{type(self).__name__}")

    @property
    def call_service(self):
        if self.ctx is None:
            raise RuntimeError("call_service works only inside a running service")
        return self.ctx.call_service

    @property
    def call_service_async(self):
        if self.ctx is None:
            raise RuntimeError("call_service_async works only inside a running service")
        return self.ctx.call_service_async
