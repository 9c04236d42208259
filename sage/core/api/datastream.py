"""DataStream: one stream of a declared pipeline; each method adds a transformation.

Every transformation takes ``parallelism=`` and ``name=``; other arguments go to the
function class's constructor. A plain callable or lambda works wherever a function class
does. One stream may feed several transformations: each sees every item.
"""

from __future__ import annotations

from .base_environment import check_function

__all__ = ["DataStream", "KEYBY_STRATEGIES", "check_resources"]

KEYBY_STRATEGIES = {"hash": "hash", "broadcast": "broadcast", "round_robin": "round_robin"}


def check_resources(resources: dict) -> None:
    for key, amount in resources.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"place(): resource {key!r} needs a number >= 0, got {amount!r}")


class DataStream:
    def __init__(self, env, node):
        self.env = env
        self.node = node

    @property
    def name(self) -> str:
        return self.node.name

    def _then(self, kind: str, function, args, kwargs, parallelism, name, **node_fields):
        check_function(kind, function)
        return self.env._add(kind, function, args, kwargs, inputs=[self.node],
                             parallelism=parallelism, name=name, **node_fields)

    def map(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        """Each item -> function(item) (a None result is not passed on)."""
        return self._then("map", function, args, kwargs, parallelism, name)

    def filter(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        """Items for which the function is true."""
        return self._then("filter", function, args, kwargs, parallelism, name)

    def flatmap(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        """Each item -> the items of the iterable the function returns (or collects)."""
        return self._then("flatmap", function, args, kwargs, parallelism, name)

    def sink(self, function, *args, parallelism: int = 1, name: str | None = None, **kwargs):
        """The function consumes each item; nothing is passed on."""
        return self._then("sink", function, args, kwargs, parallelism, name)

    def keyby(self, function, *args, strategy: str = "hash", parallelism: int = 1,
              name: str | None = None, **kwargs):
        """Key each item; the next transformation gets items routed by ``strategy``:
        "hash" (same key, same instance; a stable hash, equal in every process and run),
        "broadcast" (every instance gets every item) or "round_robin"."""
        if strategy not in KEYBY_STRATEGIES:
            raise ValueError(f"unknown keyby strategy {strategy!r}; "
                             f"valid: {', '.join(KEYBY_STRATEGIES)}")
        return self._then("keyby", function, args, kwargs, parallelism, name,
                          routing=KEYBY_STRATEGIES[strategy])

    def print(self, prefix: str = "", *, parallelism: int = 1, name: str | None = None):
        """Print each item (after ``prefix``) and pass it on."""
        return self.env._add("print", None, (), {"prefix": prefix}, inputs=[self.node],
                             parallelism=parallelism, name=name)

    def place(self, **resources) -> DataStream:
        """RemoteEnvironment: run each instance of this transformation on a Ray node that
        has these resources, counted per instance: ``.map(F, parallelism=2).place(gpu_box=1)``
        (a custom resource of `ray start --resources`), ``place(num_cpus=1)``. Without it,
        Ray's scheduler places the instance (and reserves no CPU for it). LocalEnvironment
        runs everything on this machine and ignores it, so one pipeline runs on both."""
        check_resources(resources)
        self.node.resources = dict(resources)
        return self

    def disable_chaining(self) -> DataStream:
        """Run this transformation in tasks of its own, never chained to its neighbours: in
        process mode, a CPU-heavy operator then gets a process (a core) of its own even at
        the parallelism of the operators around it."""
        self.node.chainable = False
        return self

    def connect(self, other):
        """This stream and ``other`` (a DataStream or ConnectedStreams) as inputs 0, 1, ..."""
        from .connected_streams import ConnectedStreams

        return ConnectedStreams(self.env, [self]).connect(other)

    def __repr__(self) -> str:
        return f"DataStream({self.node.name}, {self.node.kind}, parallelism={self.node.parallelism})"
