"""Reading and writing a segment file's fields by name, at the offsets the native module
reports (``_native.LAYOUT``): no offset is typed here."""

from __future__ import annotations

import mmap
import os
import struct

from sage_ext.sage_queue.python import _native

from conftest import segment_file

LAYOUT = _native.LAYOUT
MAGIC = _native.MAGIC  # a segment's first 8 bytes
SEGMENT_DIR, SEGMENT_PREFIX = _native.SEGMENT_DIR, _native.SEGMENT_PREFIX
FUTEX_TID_MASK = LAYOUT["mutex.lock.tid_mask"]  # the owner's tid in a robust mutex's lock word


def field(name: str) -> int:
    """Offset of a header field: "segment.capacity", "counters.tail" (within segment.c), ..."""
    if name.startswith("counters."):
        return LAYOUT["segment.c"] + LAYOUT[name]
    if name.startswith("journal."):
        return LAYOUT["segment.journal"] + LAYOUT[name]
    return LAYOUT[name]


def slot_field(index: int, name: str) -> int:
    return LAYOUT["segment.slots"] + index * LAYOUT["slot.size"] + LAYOUT["slot." + name]


class SegmentView:
    """A read-write mapping of queue ``name``'s file, beside the queue's own."""

    def __init__(self, name: str):
        fd = os.open(segment_file(name), os.O_RDWR | os.O_NOFOLLOW)
        try:
            self.mm = mmap.mmap(fd, 0)
        finally:
            os.close(fd)
        self.ring = self.u64(field("segment.ring_offset"))
        self.cap = self.u64(field("segment.capacity"))

    def close(self) -> None:
        self.mm.close()

    def u32(self, off: int) -> int:
        return struct.unpack_from("<I", self.mm, off)[0]

    def u64(self, off: int) -> int:
        return struct.unpack_from("<Q", self.mm, off)[0]

    def put(self, off: int, fmt: str, value) -> None:
        struct.pack_into(fmt, self.mm, off, value)

    def record(self, position: int, name: str = "state") -> int:
        """Offset of a field of the record at ring position ``position`` (or of its payload)."""
        base = self.ring + position % self.cap
        return base + (LAYOUT["record.size"] if name == "payload" else LAYOUT["record." + name])

    def slots_of(self, pid: int) -> list[int]:
        return [i for i in range(LAYOUT["slot.count"]) if self.u32(slot_field(i, "pid")) == pid]

    def lock_owner(self) -> int:
        """The tid of the thread holding the queue's lock, 0 if none does."""
        return self.u32(field("segment.mutex") + LAYOUT["mutex.lock"]) & FUTEX_TID_MASK


def watch(q) -> SegmentView:
    """A view of live queue ``q``'s segment, whose magic, capacity and counters are first
    checked against q.info(), so a wrong offset fails loudly instead of testing nothing."""
    view = SegmentView(q.name)
    info = q.info()
    found = (view.mm[:8], view.cap, *(view.u64(field(f"counters.{n}")) for n in ("head", "read", "tail", "items")))
    want = (MAGIC, info["capacity_bytes"], info["head"], info["read"], info["tail"], info["items"])
    if found != want:
        view.close()
        raise AssertionError(f"segment layout does not match _native.LAYOUT ({found} != {want})")
    return view
