"""Where a Ray job's tasks landed, and the transport of each queue that follows from it.

The actors are created first; each says where it runs (``Where``). Then every queue gets
its transport from its reader and its writers (every queue has one reader):

    reader and all writers on one node, sage_queue importable there -> sage_queue
    any writer on another node, or no native build on the node      -> ray_queue (batches)

An instance has one input queue whatever its inputs, so its transport is the same for
every edge into it: one writer on another node makes it a ray_queue. Nothing here talks
to Ray; the job (ray_job.py) asks, this module decides and describes.
"""

from __future__ import annotations

import dataclasses

__all__ = ["Where", "QueueSpec", "Links", "plan_queues", "edge_transports", "describe_job",
           "service_key", "TRANSPORTS"]

TRANSPORTS = ("auto", "ray_queue")  # RemoteEnvironment(config={"transport": ...})


@dataclasses.dataclass(frozen=True)
class Where:
    """What an actor reported about the place it runs."""

    node_id: str
    ip: str
    pid: int
    shm_key: str  # which /dev/shm the actor sees: segments of one host are removed there
    sage_queue: bool  # the native module imports in that actor

    @property
    def node(self) -> str:
        return self.node_id[:8]


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    """One queue of the job, as every actor that uses it opens it."""

    name: str
    kind: str  # "input" (an instance's), "requests" (a service's), "replies" (a caller's)
    reader: str  # task key ("count[0]", "service:model"): it creates and removes the queue
    transport: str  # sage_queue or ray_queue
    reason: str
    maxsize: int
    capacity_bytes: int  # sage_queue's ring
    namespace: str  # ray_queue's actor namespace (the job's)
    node_id: str  # the reader's node
    shm_key: str

    def create_options(self) -> dict:
        """Arguments of create_queue() for this queue (the same for reader and writers). No
        default timeouts: a task loop's get blocks until there is something and a router's
        put is backpressure; SAGE_QUEUE_GET/PUT_TIMEOUT are for users' own queues."""
        waits = dict(put_timeout=None, get_timeout=None)
        if self.transport == "sage_queue":
            return dict(name=self.name, maxsize=self.maxsize, capacity_bytes=self.capacity_bytes, **waits)
        return dict(name=self.name, maxsize=self.maxsize, namespace=self.namespace, **waits)


@dataclasses.dataclass(frozen=True)
class Links:
    """The queues one task uses, by role (every name is a key of ``specs``)."""

    specs: dict  # queue name -> QueueSpec
    input: str | None = None  # what it reads: an instance's input, a service's requests
    reply: str | None = None  # its own reply queue (when services are registered)
    requests: dict = dataclasses.field(default_factory=dict)  # service -> request queue
    replies: dict = dataclasses.field(default_factory=dict)  # services: caller slot -> queue


def links_of(plan, queues: dict, input_name: str | None, slot: int, out_names=(),
             service: bool = False) -> Links:
    """Only the queues this task uses, so an actor gets a small description."""
    reply = plan.response_queues.get(slot)
    requests = {s.decl.name: s.request_queue for s in plan.services}
    replies = dict(plan.response_queues) if service else {}
    names = {input_name, reply, *out_names, *requests.values(), *replies.values()} - {None}
    return Links({n: queues[n] for n in names}, input_name, reply, requests, replies)


def service_key(name: str) -> str:
    return f"service:{name}"


def _choose(reader: str, writers: list, where: dict, force_ray: bool) -> tuple[str, str]:
    home = where[reader]
    if force_ray:
        return "ray_queue", "config transport='ray_queue'"
    away = [w for w in writers if where[w].node_id != home.node_id]
    if away:
        shown = ", ".join(f"{w} on node {where[w].node}" for w in away[:3])
        more = f" and {len(away) - 3} more" if len(away) > 3 else ""
        return "ray_queue", (f"crosses nodes: {shown}{more} -> {reader} on node {home.node}; "
                             "batches of the router")
    if not home.sage_queue:
        return "ray_queue", (f"node {home.node} has no native sage_queue (minimal profile); "
                             "batches of the router")
    return "sage_queue", (f"reader and writers on node {home.node}, "
                          "where the native sage_queue imports")


def _writers(plan) -> dict:
    """Queue name -> (kind, reader, writers) of every queue of the plan."""
    keys_of = {n.id: [i.key for i in plan.instances_of(n.id)] for n in plan.nodes}
    services = [service_key(s.decl.name) for s in plan.services]
    callers = [i.key for i in plan.instances] + services
    found = {}
    for spec in plan.instances:
        if spec.input_queue:
            writers = [k for up in spec.node.inputs for k in keys_of[up.id]]
            found[spec.input_queue] = ("input", spec.key, writers)
    for spec in plan.services:
        found[spec.request_queue] = ("requests", service_key(spec.decl.name), callers)
    caller_of_slot = {i.slot: i.key for i in plan.instances}
    caller_of_slot.update({s.slot: service_key(s.decl.name) for s in plan.services})
    for slot, name in plan.response_queues.items():
        found[name] = ("replies", caller_of_slot[slot], services)
    return found


def plan_queues(plan, where: dict, options, namespace: str) -> dict:
    """Queue name -> QueueSpec, for the actors placed as ``where`` (task key -> Where)."""
    force_ray = options.transport == "ray_queue"
    operator_of = {i.input_queue: i.node.name for i in plan.instances if i.input_queue}
    options.check_operators(plan)
    specs = {}
    for name, (kind, reader, writers) in _writers(plan).items():
        transport, reason = _choose(reader, writers, where, force_ray)
        service = kind != "input"
        specs[name] = QueueSpec(
            name=name, kind=kind, reader=reader, transport=transport, reason=reason,
            maxsize=0 if service else options.queue_maxsize,
            capacity_bytes=options.service_capacity_bytes if service
            else options.input_capacity_bytes(operator_of[name]),
            namespace=namespace, node_id=where[reader].node_id, shm_key=where[reader].shm_key)
    return specs


def edge_transports(plan, queues: dict) -> list:
    """One row per (edge, downstream instance): the transport its packets take, and why."""
    names = {n.id: n.name for n in plan.nodes}
    rows = []
    for edge in plan.edges:
        for target in plan.instances_of(edge.downstream):
            spec = queues[target.input_queue]
            rows.append({"upstream": names[edge.upstream], "downstream": target.key,
                         "input": edge.input_index, "routing": edge.routing,
                         "transport": spec.transport, "reason": spec.reason})
    return rows


def describe_job(plan, where: dict, queues: dict, header: str) -> str:
    """The job as placed: each task's node, each edge's transport and why, the services'."""
    lines = [header]
    nodes = sorted({w.node_id for w in where.values()})
    lines.append(f"  nodes: {', '.join(f'{n[:8]} ({where_ip(where, n)})' for n in nodes)}")
    for key, w in where.items():
        lines.append(f"  {key} on node {w.node} (pid {w.pid})")
    for row in edge_transports(plan, queues):
        lines.append(f"  {row['upstream']} -> {row['downstream']} input {row['input']} "
                     f"({row['routing']}): {row['transport']}: {row['reason']}")
    for spec in queues.values():
        if spec.kind != "input":
            what = "requests of" if spec.kind == "requests" else "replies to"
            lines.append(f"  {what} {spec.reader}: {spec.transport}: {spec.reason}")
    return "\n".join(lines)


def where_ip(where: dict, node_id: str) -> str:
    return next(w.ip for w in where.values() if w.node_id == node_id)
