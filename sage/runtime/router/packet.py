"""What travels on data queues. Two formats, chosen per downstream operator by the plan:

    bare (most operators):  the payload itself; the end of stream is an EndOfStream object
    tagged (comap, join):   (input_index, payload, key); the end is (END, input_index, sender)

Bare payloads cost nothing to wrap and go through the native queue's item codec as they
are; only operators that need an item's input (comap) or key (join) get tuples. Each
upstream instance sends one end marker per edge, after all its data, on the same queue.
"""

from __future__ import annotations

import zlib

__all__ = ["END", "EndOfStream", "TAGGED_KINDS", "end_marker", "stable_hash"]

END = -1
TAGGED_KINDS = ("comap", "join")  # operators that receive (input_index, payload, key)


class EndOfStream:
    """The end marker of a bare edge: no payload is ever of this class."""

    __slots__ = ("input_index", "sender")

    def __init__(self, input_index: int, sender: str):
        self.input_index = input_index
        self.sender = sender

    def __reduce__(self):
        return (EndOfStream, (self.input_index, self.sender))

    def __repr__(self) -> str:
        return f"EndOfStream(input {self.input_index} from {self.sender})"


def end_marker(input_index: int, sender: str, tagged: bool):
    return (END, input_index, sender) if tagged else EndOfStream(input_index, sender)


def stable_hash(key) -> int:
    """The same number for the same key in every process and run (Python's hash() of str is
    salted per process, so it cannot route keys across processes)."""
    if isinstance(key, str):
        data = key.encode("utf-8", "surrogatepass")
    elif isinstance(key, (bytes, bytearray)):
        data = bytes(key)
    else:
        data = repr(key).encode("utf-8", "surrogatepass")
    return zlib.crc32(data)
