"""The plan: a declared graph of transformations expanded into task instances and edges.

Each transformation (Node) becomes ``parallelism`` instances, each with one input queue
(sources have none). Each edge records how it routes and its transport: threads of one
process talk through python_queue, processes on one machine through sage_queue (the
queue adapter builds them; nothing here imports a backend). On Ray (mode "ray") the
transport of each queue is chosen once the actors are placed (see ray_placement.py), so
the plan's edges say PER_EDGE. End markers expected per instance: one per upstream
instance per input.

Chaining (on this machine): where an edge is one-to-one (equal parallelism, the upstream's
only consumer, the downstream's only input, routing that sends instance i's items to
instance i anyway or may as well), its two operators run in one task, instance by
instance: the items pass by a function call instead of a queue. A chain is one thread or
one process; its head owns the input queue, its tail the router. Each operator keeps its
own instances, counters and errors.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .router.packet import TAGGED_KINDS
from .router.router import ROUTINGS

__all__ = ["Node", "ServiceDecl", "Edge", "InstanceSpec", "ServiceSpec", "Plan", "build_plan",
           "TRANSPORT_OF_MODE", "MAX_INPUTS", "PER_EDGE", "CHAINED"]

TRANSPORT_OF_MODE = {"thread": "python_queue", "process": "sage_queue"}
PER_EDGE = "a transport per edge, once placed"  # mode "ray": see ray_placement.py
CHAINED = "chained"  # both ends in one task: a function call, no queue
MAX_INPUTS = 5  # ConnectedStreams: up to five inputs (comap's map0..map4)


@dataclasses.dataclass(eq=False)
class Node:
    """One declared transformation (what DataStream methods record)."""

    id: int
    kind: str  # collection, batch, source, map, filter, flatmap, sink, keyby, print, comap, join
    name: str
    function: Any
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    parallelism: int = 1
    inputs: list = dataclasses.field(default_factory=list)  # input index -> upstream Node
    routing: str = "round_robin"  # how edges leaving this node route (a keyby's strategy)
    delay: float | None = None  # sources: seconds between calls
    resources: dict = dataclasses.field(default_factory=dict)  # Ray resources per instance
    chainable: bool = True  # False: its own task, never chained (DataStream.disable_chaining)

    @property
    def is_source(self) -> bool:
        return not self.inputs


@dataclasses.dataclass(frozen=True)
class ServiceDecl:
    name: str
    cls: Any
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    resources: dict = dataclasses.field(default_factory=dict)  # Ray resources of its actor


@dataclasses.dataclass(frozen=True)
class Edge:
    upstream: int  # node ids
    downstream: int
    input_index: int
    routing: str
    transport: str
    tagged: bool  # packets carry (input_index, payload, key): the downstream is a comap or join


@dataclasses.dataclass(frozen=True)
class InstanceSpec:
    node: Node
    index: int
    key: str  # "name[index]": names the instance in errors and metrics
    input_queue: str | None  # queue name; None for sources
    ends_expected: int  # end markers to count before finishing
    slot: int  # counters slot and service caller id
    chain_head: str | None = None  # key of the instance whose task runs this one (chained)


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    decl: ServiceDecl
    request_queue: str
    slot: int  # caller id (services call services)


@dataclasses.dataclass
class Plan:
    job_id: str
    transport: str
    nodes: list
    edges: list
    instances: list
    services: list
    response_queues: dict  # caller slot -> queue name (only when services are registered)
    chains: dict = dataclasses.field(default_factory=dict)  # head key -> [specs], head first

    def out_edges(self, node: Node) -> list:
        return [e for e in self.edges if e.upstream == node.id]

    @property
    def task_instances(self) -> list:
        """The instances that run a task of their own: chain heads (and unchained ones)."""
        return [i for i in self.instances if i.chain_head is None]

    def chain_of(self, head) -> list:
        """The instances ``head``'s task runs, in order: itself, then what is chained to it."""
        return self.chains.get(head.key, [head])

    def instances_of(self, node_id: int) -> list:
        return [i for i in self.instances if i.node.id == node_id]

    def describe(self) -> str:
        lines = [f"job {self.job_id} ({self.transport})"]
        names = {n.id: n.name for n in self.nodes}
        for node in self.nodes:
            lines.append(f"  {node.name} x{node.parallelism} ({node.kind})")
        for e in self.edges:
            how = ("chained: one task, a function call" if e.transport == CHAINED
                   else f"{e.routing} over {e.transport}")
            lines.append(f"  {names[e.upstream]} -> {names[e.downstream]}"
                         f" input {e.input_index}: {how}{' (tagged)' if e.tagged else ''}")
        return "\n".join(lines)


def _check(nodes: list) -> None:
    ids = {n.id for n in nodes}
    for node in nodes:
        if node.parallelism < 1:
            raise ValueError(f"{node.name}: parallelism must be >= 1, got {node.parallelism}")
        if node.routing not in ROUTINGS:
            raise ValueError(f"{node.name}: unknown strategy {node.routing!r}; "
                             f"valid: {', '.join(ROUTINGS)}")
        if len(node.inputs) > MAX_INPUTS:
            raise ValueError(f"{node.name}: at most {MAX_INPUTS} inputs, got {len(node.inputs)}")
        for upstream in node.inputs:
            if upstream.id not in ids:
                raise ValueError(f"{node.name}: its input {upstream.name} belongs to another "
                                 "environment")


def _chained_nodes(nodes: list) -> set:
    """Ids of the nodes that join their only upstream's task (see the module's docstring)."""
    consumers: dict = {}
    for node in nodes:
        for upstream in node.inputs:
            consumers.setdefault(upstream.id, []).append(node)
    chained = set()
    for node in nodes:
        if len(node.inputs) != 1 or node.kind in TAGGED_KINDS:
            continue
        up = node.inputs[0]
        one_to_one = up.parallelism == node.parallelism and (
            up.parallelism == 1 or up.routing == "round_robin")  # forward balances as well
        if one_to_one and consumers[up.id] == [node] and up.chainable and node.chainable:
            chained.add(node.id)
    return chained


def build_plan(nodes: list, services: list, mode: str, job_id: str, chaining: bool = True) -> Plan:
    """Expand the declared graph; names every queue (``job_id`` keeps them unique).
    ``chaining`` joins one-to-one operators into one task (not on Ray: mode "ray")."""
    if mode not in TRANSPORT_OF_MODE and mode != "ray":
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(TRANSPORT_OF_MODE)}")
    if not nodes:
        raise ValueError("the pipeline is empty: declare a source (from_batch, from_source, ...)")
    _check(nodes)
    transport = PER_EDGE if mode == "ray" else TRANSPORT_OF_MODE[mode]
    chained = _chained_nodes(nodes) if chaining and mode != "ray" else set()
    edges = [Edge(up.id, node.id, index, up.routing,
                  CHAINED if node.id in chained else transport, node.kind in TAGGED_KINDS)
             for node in nodes for index, up in enumerate(node.inputs)]
    instances, head_of, chains = [], {}, {}
    for node in nodes:  # declared in order: a node's inputs come before it
        ends = sum(up.parallelism for up in node.inputs)
        for index in range(node.parallelism):
            key = f"{node.name}[{index}]"
            head = head_of.get((node.inputs[0].id, index)) if node.id in chained else None
            head_of[(node.id, index)] = head or key
            spec = InstanceSpec(
                node=node, index=index, key=key,
                input_queue=None if node.is_source or head else f"{job_id}.in.{node.id}.{index}",
                ends_expected=0 if head else ends, slot=len(instances), chain_head=head)
            instances.append(spec)
            chains.setdefault(head or key, []).append(spec)
    service_specs = [ServiceSpec(decl, f"{job_id}.svc.{n}", len(instances) + n)
                     for n, decl in enumerate(services)]
    response_queues = {}
    if services:
        callers = [i.slot for i in instances] + [s.slot for s in service_specs]
        response_queues = {slot: f"{job_id}.resp.{slot}" for slot in callers}
    return Plan(job_id, transport, list(nodes), edges, instances, service_specs, response_queues,
                {head: specs for head, specs in chains.items() if len(specs) > 1})
