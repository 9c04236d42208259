"""What travels on data queues. Two formats, chosen per downstream operator by the plan:

    bare (most operators):  the payload itself; the end of stream is an EndOfStream object
    tagged (comap, join):   (input_index, payload, key); the end is (END, input_index, sender)

Bare payloads cost nothing to wrap and go through the native queue's item codec as they
are; only operators that need an item's input (comap) or key (join) get tuples. Each
upstream instance sends one end marker per edge, after all its data, on the same queue.
"""

from __future__ import annotations

import numbers
import struct
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
    """The same number for equal keys in every process and run (Python's hash() of str is
    salted per process, so it cannot route keys across processes).

    Keys it knows, equal keys hashing equal: str, bytes, None; numbers (bool, int, float,
    Fraction, Decimal, numpy scalars: 1, 1.0 and True are one key); tuples of known keys,
    element-wise; frozensets and sets of known keys, whatever their order. Any other key is
    hashed by its repr(), which must then be the same for equal keys in every process (an
    enum or a dataclass of known keys is; an object whose repr shows its id() is not).
    """
    if type(key) is str:  # the usual key: no tag, no copy but the encoding
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if type(key) is int:
        return zlib.crc32(b"i" + key.to_bytes(key.bit_length() // 8 + 1, "little", signed=True))
    return zlib.crc32(_canonical(key))


def _int_bytes(value: int) -> bytes:
    return b"i" + value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)


def _canonical(key) -> bytes:
    """Bytes equal for equal keys (see stable_hash), with a tag per kind."""
    kind = type(key)
    if kind is str:
        return b"s" + key.encode("utf-8", "surrogatepass")
    if kind is int or kind is bool:
        return _int_bytes(int(key))
    if kind is float:
        if key.is_integer():
            return _int_bytes(int(key))
        return b"f" + struct.pack("<d", key)
    if kind is tuple:
        return b"t" + b"".join(_framed(_canonical(item)) for item in key)
    if isinstance(key, (frozenset, set)):
        return b"S" + b"".join(_framed(part) for part in sorted(_canonical(k) for k in key))
    if key is None:
        return b"N"
    if isinstance(key, (bytes, bytearray)):
        return b"b" + bytes(key)
    if isinstance(key, complex):
        return _number(key.real) if key.imag == 0 else b"c" + struct.pack("<dd", key.real, key.imag)
    if isinstance(key, numbers.Number):  # Fraction, Decimal, numpy scalars
        return _number(key)
    if isinstance(key, str):
        return _canonical(str(key))
    if isinstance(key, tuple):
        return _canonical(tuple(key))
    return b"r" + repr(key).encode("utf-8", "surrogatepass")


def _number(key) -> bytes:
    try:
        as_int = int(key)
    except (TypeError, ValueError, OverflowError):  # nan, inf
        as_int = None
    if as_int is not None and as_int == key:
        return _int_bytes(as_int)
    try:
        return _canonical(float(key))
    except (TypeError, ValueError, OverflowError):
        return b"r" + repr(key).encode("utf-8", "surrogatepass")


def _framed(part: bytes) -> bytes:
    return len(part).to_bytes(4, "little") + part
