"""Checksummed, numbered test items: the one format every test uses to prove that each item
arrived whole, once, and from whom.

An item names its producer and sequence number and carries a crc32 of both and of its
payload, in one of three encodings, so raw, pickled and out-of-band records are all
exercised: raw bytes (a header, then the payload), an in-band pickle ("t", ...), or a
pickle whose payload travels out of band ("b", ..., PickleBuffer). check_item() tells an
intact item from a garbled one whatever a consumer got back.
"""

from __future__ import annotations

import os
import pickle
import struct
import zlib

__all__ = ["ENCODINGS", "MAX_PAYLOAD_BYTES", "RAW_HEADER", "check_item", "make_item", "payload"]

ENCODINGS = ("raw", "pickle", "out_of_band")
_ID = struct.Struct("<HQ")  # producer, seq
RAW_HEADER = struct.Struct("<HQII")  # producer, seq, crc32(id + payload), payload length


MAX_PAYLOAD_BYTES = 1 << 20
_BLOCK = os.urandom(MAX_PAYLOAD_BYTES + 1)


def payload(size: int, rng) -> bytes:
    """``size`` random bytes: a slice of one random block at a random offset (random.Random
    ``rng``), so the stale bytes of an earlier item in the ring never pass for this one's."""
    start = rng.randrange(len(_BLOCK) - size)
    return _BLOCK[start:start + size]


def _crc(producer: int, seq: int, payload) -> int:
    return zlib.crc32(payload, zlib.crc32(_ID.pack(producer, seq)))


def make_item(producer: int, seq: int, payload: bytes, encoding: str = "raw"):
    """Item ``seq`` of ``producer`` carrying ``payload``, in one of ENCODINGS."""
    crc = _crc(producer, seq, payload)
    if encoding == "raw":
        return RAW_HEADER.pack(producer, seq, crc, len(payload)) + payload
    if encoding == "pickle":
        return ("t", producer, seq, crc, payload)
    if encoding == "out_of_band":
        return ("b", producer, seq, crc, pickle.PickleBuffer(bytearray(payload)))
    raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")


def check_item(obj) -> tuple[int, int]:
    """(producer, seq) of an intact item; ValueError saying what is wrong with a garbled one."""
    if type(obj) is bytes:
        if len(obj) < RAW_HEADER.size:
            raise ValueError(f"short raw item ({len(obj)} bytes)")
        producer, seq, crc, size = RAW_HEADER.unpack_from(obj)
        payload = memoryview(obj)[RAW_HEADER.size:]
        if len(payload) != size:
            raise ValueError(f"item {producer}:{seq}: {len(payload)} payload bytes, header says {size}")
    elif type(obj) is tuple and len(obj) == 5 and obj[0] in ("t", "b"):
        _, producer, seq, crc, payload = obj
        if type(producer) is not int or type(seq) is not int or not 0 <= producer < 65536 or seq < 0:
            raise ValueError(f"not a test item's id: {producer!r:.40}, {seq!r:.40}")
        if type(payload) is not (bytes if obj[0] == "t" else bytearray):
            raise ValueError(f"item {producer}:{seq}: payload came back as {type(payload).__name__}")
    else:
        raise ValueError(f"not a test item: {type(obj).__name__} {obj!r:.80}")
    if _crc(producer, seq, payload) != crc:
        raise ValueError(f"item {producer}:{seq}: checksum mismatch")
    return producer, seq
