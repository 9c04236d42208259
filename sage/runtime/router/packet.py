"""What travels on data queues: plain tuples, so the native queue's item codec carries them.

    data packet: (input_index >= 0, payload, key)   key is None unless the edge is keyed
    end marker:  (END, input_index, sender)         sent once by each upstream instance, after
                                                    all its data, on the same queue
"""

from __future__ import annotations

import zlib

__all__ = ["END", "data_packet", "end_marker", "is_end", "stable_hash"]

END = -1


def data_packet(input_index: int, payload, key=None) -> tuple:
    return (input_index, payload, key)


def end_marker(input_index: int, sender: str) -> tuple:
    return (END, input_index, sender)


def is_end(packet: tuple) -> bool:
    return packet[0] < 0


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
