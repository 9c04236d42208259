"""Router: hands an operator's output to the downstream instances of every out-edge.

Each out-edge routes round robin, by a stable key hash, or broadcast. Packets are
batched per downstream instance and sent with put_many when a batch is full or when the
task calls flush() (its own input is momentarily empty, or a source paused): low load
keeps low latency, high load gets batch throughput. Puts block on full queues: that is
the backpressure, nothing is ever dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

from .packet import end_marker, stable_hash

__all__ = ["Router", "OutEdge", "ROUTINGS"]

ROUTINGS = ("round_robin", "hash", "broadcast")


def _batch_larger_than_ring(exc: ValueError) -> bool:
    """sage_queue's put_many: "batch of N bytes or more is larger than the ring of ..." """
    text = str(exc)
    return text.startswith("batch of ") and "larger than the ring" in text


def _item_larger_than_ring(exc: ValueError) -> bool:
    """sage_queue's put: "item of N bytes or more is larger than the ring of ..." """
    text = str(exc)
    return text.startswith("item of ") and "larger than the ring" in text


class OutEdge:
    """The queues of one downstream transformation (one per instance) and how to pick one."""

    def __init__(self, input_index: int, routing: str, queues: Sequence, target: str = "",
                 tagged: bool = False, batch_size: int = 64):
        if routing not in ROUTINGS:
            raise ValueError(f"unknown routing {routing!r}; valid: {', '.join(ROUTINGS)}")
        if not queues:
            raise ValueError("an out-edge needs at least one downstream queue")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.input_index = input_index
        self.routing = routing
        self.queues = list(queues)
        self.target = target
        self.tagged = tagged  # (input_index, payload, key) tuples, else bare payloads
        self.batch_size = batch_size
        self._counted = 0  # items sent, not counting those still in the buffers (see sent)
        self._buffers: list[list] = [[] for _ in self.queues]
        self._next = 0
        # the hot path: one function per case, chosen once
        if len(self.queues) == 1:
            self._only = self._buffers[0]
            self.send = self._send_tagged_to_the_one if tagged else self._send_bare_to_the_one
        else:
            self.send = {"round_robin": self._send_round_robin, "hash": self._send_by_key,
                         "broadcast": self._send_to_all}[routing]

    @property
    def sent(self) -> int:
        """Items handed to this edge (a broadcast item counts once)."""
        if self.routing == "broadcast" and len(self.queues) > 1:
            return self._counted
        return self._counted + sum(len(buffer) for buffer in self._buffers)

    def _packet(self, payload, key):
        return (self.input_index, payload, key) if self.tagged else payload

    def _send_bare_to_the_one(self, payload, key=None) -> None:
        buffer = self._only
        buffer.append(payload)
        if len(buffer) >= self.batch_size:
            self._put(0)

    def _send_tagged_to_the_one(self, payload, key=None) -> None:
        buffer = self._only
        buffer.append((self.input_index, payload, key))
        if len(buffer) >= self.batch_size:
            self._put(0)

    def _send_round_robin(self, payload, key=None) -> None:
        index = self._next
        self._next = (index + 1) % len(self.queues)
        self._append(index, payload, key)

    def _send_by_key(self, payload, key=None) -> None:
        self._append(stable_hash(key) % len(self.queues), payload, key)

    def _send_to_all(self, payload, key=None) -> None:
        self._counted += 1
        packet = self._packet(payload, key)
        for index, buffer in enumerate(self._buffers):
            buffer.append(packet)
            if len(buffer) >= self.batch_size:
                self._put(index)

    def _append(self, index: int, payload, key) -> None:
        buffer = self._buffers[index]
        buffer.append((self.input_index, payload, key) if self.tagged else payload)
        if len(buffer) >= self.batch_size:
            self._put(index)

    def _put(self, index: int) -> None:
        buffer = self._buffers[index]
        queue = self.queues[index]
        try:
            try:
                queue.put_many(buffer)  # blocks while the queue is full: backpressure
            except ValueError as exc:
                # only a batch larger than the ring is sent again, an item at a time; any
                # other ValueError (a payload's own __reduce__, say) is the error
                if len(buffer) == 1 or not _batch_larger_than_ring(exc):
                    raise
                for packet in buffer:
                    queue.put(packet)
        except ValueError as exc:
            if not _item_larger_than_ring(exc):
                raise
            raise ValueError(
                f"an item for {self.target or 'the next operator'} is larger than the input ring of its "
                f"instances: give it a larger one with the config's operator_queue_capacity_bytes="
                f"{{{self.target!r}: <bytes>}} (or queue_capacity_bytes for every operator); {exc}") from exc
        if self.routing != "broadcast" or len(self.queues) == 1:
            self._counted += len(buffer)
        buffer.clear()  # put_many took its copy (encoded, or listed) during the call

    def flush(self) -> None:
        for index, buffer in enumerate(self._buffers):
            if buffer:
                self._put(index)

    def end(self, sender: str) -> None:
        """Flush, then one end marker to every instance, whatever the routing."""
        self.flush()
        marker = end_marker(self.input_index, sender, self.tagged)
        for queue in self.queues:
            queue.put(marker)


class Router:
    """All out-edges of one task instance."""

    def __init__(self, edges: Sequence[OutEdge]):
        self.edges = list(edges)
        self._ended = False
        if len(self.edges) == 1:
            self.emit = self.edges[0].send  # the usual case skips a loop and a call
        elif not self.edges:
            self.emit = self._count_only
        self.ended_here = 0  # items of a terminal operator (a sink): no edge takes them on

    def emit(self, payload, key=None) -> None:
        for edge in self.edges:
            edge.send(payload, key)

    def _count_only(self, payload, key=None) -> None:
        self.ended_here += 1

    @property
    def emitted(self) -> int:
        """Items emitted (each counts once, whatever the number of edges)."""
        return self.edges[0].sent if self.edges else self.ended_here

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
