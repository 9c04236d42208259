"""Router: hands an operator's output to the downstream instances of every out-edge.

Each out-edge routes round robin, by a stable key hash, or broadcast. Packets are
batched per downstream instance and sent with put_many when a batch is full or when the
task calls flush() (its own input is momentarily empty, or a source paused): low load
keeps low latency, high load gets batch throughput. Puts block on full queues: that is
the backpressure, nothing is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from .packet import data_packet, end_marker, stable_hash

__all__ = ["Router", "OutEdge", "ROUTINGS"]

ROUTINGS = ("round_robin", "hash", "broadcast")


class OutEdge:
    """The queues of one downstream transformation (one per instance) and how to pick one."""

    __slots__ = ("input_index", "routing", "queues", "target", "_buffers", "_next", "_batch_size")

    def __init__(self, input_index: int, routing: str, queues: Sequence, target: str = ""):
        if routing not in ROUTINGS:
            raise ValueError(f"unknown routing {routing!r}; valid: {', '.join(ROUTINGS)}")
        if not queues:
            raise ValueError("an out-edge needs at least one downstream queue")
        self.input_index = input_index
        self.routing = routing
        self.queues = list(queues)
        self.target = target
        self._buffers: list[list] = [[] for _ in self.queues]
        self._next = 0
        self._batch_size = 64

    def send(self, payload, key) -> None:
        packet = data_packet(self.input_index, payload, key)
        count = len(self.queues)
        if count == 1:
            self._append(0, packet)
        elif self.routing == "round_robin":
            index = self._next
            self._next = (index + 1) % count
            self._append(index, packet)
        elif self.routing == "hash":
            self._append(stable_hash(key) % count, packet)
        else:
            for index in range(count):
                self._append(index, packet)

    def _append(self, index: int, packet: tuple) -> None:
        buffer = self._buffers[index]
        buffer.append(packet)
        if len(buffer) >= self._batch_size:
            self._put(index)

    def _put(self, index: int) -> None:
        buffer = self._buffers[index]
        self._buffers[index] = []
        queue = self.queues[index]
        try:
            queue.put_many(buffer)  # blocks while the queue is full: backpressure
        except ValueError:
            if len(buffer) == 1:
                raise  # one item larger than the queue's ring: the error says by how much
            for packet in buffer:  # the batch as a whole is larger than the ring
                queue.put(packet)

    def flush(self) -> None:
        for index, buffer in enumerate(self._buffers):
            if buffer:
                self._put(index)

    def end(self, sender: str) -> None:
        """Flush, then one end marker to every instance, whatever the routing."""
        self.flush()
        marker = end_marker(self.input_index, sender)
        for queue in self.queues:
            queue.put(marker)


class Router:
    """All out-edges of one task instance; counts what it emits."""

    def __init__(self, edges: Sequence[OutEdge], batch_size: int = 64):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.edges = list(edges)
        for edge in self.edges:
            edge._batch_size = batch_size
        self.emitted = 0
        self._ended = False
        # one edge (the usual case) skips the loop
        self._single = self.edges[0] if len(self.edges) == 1 else None

    def emit(self, payload, key=None) -> None:
        self.emitted += 1
        single = self._single
        if single is not None:
            single.send(payload, key)
            return
        for edge in self.edges:
            edge.send(payload, key)

    def flush(self) -> None:
        for edge in self.edges:
            edge.flush()

    def end(self, sender: str) -> None:
        """Send what is buffered, then the end markers behind it; once."""
        if self._ended:
            return
        self._ended = True
        for edge in self.edges:
            edge.end(sender)
