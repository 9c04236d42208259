"""The plan: a declared graph of transformations expanded into task instances and edges.

Each transformation (Node) becomes ``parallelism`` instances, each with one input queue
(sources have none). Each edge records how it routes and its transport: threads of one
process talk through python_queue, processes on one machine through sage_queue (the
queue adapter builds them; nothing here imports a backend). On Ray (mode "ray") the
transport of each queue is chosen once the actors are placed (see ray_placement.py), so
the plan's edges say PER_EDGE. End markers expected per instance: one per upstream
instance per input.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .router.packet import TAGGED_KINDS
from .router.router import ROUTINGS

__all__ = ["Node", "ServiceDecl", "Edge", "InstanceSpec", "ServiceSpec", "Plan", "build_plan",
           "TRANSPORT_OF_MODE", "MAX_INPUTS", "PER_EDGE"]

TRANSPORT_OF_MODE = {"thread": "python_queue", "process": "sage_queue"}
PER_EDGE = "a transport per edge, once placed"  # mode "ray": see ray_placement.py
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

    def out_edges(self, node: Node) -> list:
        return [e for e in self.edges if e.upstream == node.id]

    def instances_of(self, node_id: int) -> list:
        return [i for i in self.instances if i.node.id == node_id]

    def describe(self) -> str:
        lines = [f"job {self.job_id} ({self.transport})"]
        names = {n.id: n.name for n in self.nodes}
        for node in self.nodes:
            lines.append(f"  {node.name} x{node.parallelism} ({node.kind})")
        for e in self.edges:
            lines.append(f"  {names[e.upstream]} -> {names[e.downstream]}"
                         f" input {e.input_index}: {e.routing} over {e.transport}"
                         f"{' (tagged)' if e.tagged else ''}")
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


def build_plan(nodes: list, services: list, mode: str, job_id: str) -> Plan:
    """Expand the declared graph; names every queue (``job_id`` keeps them unique)."""
    if mode not in TRANSPORT_OF_MODE and mode != "ray":
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(TRANSPORT_OF_MODE)}")
    if not nodes:
        raise ValueError("the pipeline is empty: declare a source (from_batch, from_source, ...)")
    _check(nodes)
    transport = PER_EDGE if mode == "ray" else TRANSPORT_OF_MODE[mode]
    edges = [Edge(up.id, node.id, index, up.routing, transport, node.kind in TAGGED_KINDS)
             for node in nodes for index, up in enumerate(node.inputs)]
    instances = []
    for node in nodes:
        ends = sum(up.parallelism for up in node.inputs)
        for index in range(node.parallelism):
            instances.append(InstanceSpec(
                node=node, index=index, key=f"{node.name}[{index}]",
                input_queue=None if node.is_source else f"{job_id}.in.{node.id}.{index}",
                ends_expected=ends, slot=len(instances)))
    service_specs = [ServiceSpec(decl, f"{job_id}.svc.{n}", len(instances) + n)
                     for n, decl in enumerate(services)]
    response_queues = {}
    if services:
        callers = [i.slot for i in instances] + [s.slot for s in service_specs]
        response_queues = {slot: f"{job_id}.resp.{slot}" for slot in callers}
    return Plan(job_id, transport, list(nodes), edges, instances, service_specs, response_queues)
