"""RemoteEnvironment: runs a declared pipeline on a Ray cluster, with LocalEnvironment's API.

Every task instance and every service is a Ray actor of its own. The cluster is the one at
``address``, else SAGE_QUEUE_RAY_ADDRESS, else a local Ray started on 127.0.0.1. Each
queue's transport follows from where the actors landed: sage_queue between actors of one
node where the native module is built, ray_queue batches across nodes (``describe()``
says which and why). ``.place(resource=n)`` on a stream pins its instances by Ray
resources; otherwise Ray's scheduler places them. Functions travel to the actors pickled
(cloudpickle): state they change stays in the actor, so collect results through a sink
that writes somewhere shared (a queue, a service), as in LocalEnvironment's process mode.
"""

from __future__ import annotations

import os
import secrets

from sage.runtime.plan import build_plan

from .base_environment import BaseEnvironment, options_from

__all__ = ["RemoteEnvironment"]


class RemoteEnvironment(BaseEnvironment):
    def __init__(self, name: str = "remote", *, address: str | None = None,
                 config: dict | None = None):
        from sage.runtime.ray_job import RemoteOptions  # Ray itself is imported at submit()

        super().__init__(name, config=config)
        self.address = address
        self.options = options_from(self.config, RemoteOptions)

    def submit(self, autostop: bool = False):
        """Start the pipeline on Ray. ``autostop=True`` blocks until every finite source has
        ended and every item has reached the sinks, tears the job down and returns its
        summary; otherwise returns the running job at once (see stop(), wait(), close())."""
        from sage.runtime.ray_connect import connect
        from sage.runtime.ray_job import RayJob

        self._check_not_running()
        connect(self.address)
        job_id = f"sage-{os.getpid()}-r{secrets.token_hex(4)}"
        plan = build_plan(self._nodes, self._services, "ray", job_id)
        self.job = RayJob(plan, self.options, env_name=self.name).start()
        if not autostop:
            return self.job
        try:
            return self.job.wait()
        finally:
            self.job.close()

    def describe(self) -> str:
        """The submitted job as placed: each task's node, each edge's transport and why;
        before submit(), the declared graph."""
        if self.job is not None:
            return self.job.describe()
        return build_plan(self._nodes, self._services, "ray", "(not submitted)").describe()

    def __repr__(self) -> str:
        where = self.address or "local or configured Ray"
        return f"RemoteEnvironment({self.name!r}, {where}, {len(self._nodes)} operators)"
