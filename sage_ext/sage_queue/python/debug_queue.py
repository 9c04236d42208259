"""Inspect one queue's shared header and counters without changing the queue.

    python -m sage_ext.sage_queue.python.debug_queue NAME [--json]

The segment is attached in the native "inspect" mode: no user slot is taken, so
inspecting neither keeps a queue alive nor removes it.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time

from . import _native
from .sage_queue import SEGMENT_DIR, SEGMENT_PREFIX, SegmentCorruptError

__all__ = ["describe", "open_inspect", "segment_path", "main"]

# The header's first 8 bytes (kMagic in shm_queue.cpp). Checked here too so a
# foreign file is reported at once; the native attach waits for `ready` first.
_MAGIC = b"SGQUEUE1"
_PAGE = 4096  # every segment the native core creates is a whole number of pages
_INIT_WAIT_SECONDS = 2.0  # how long the native attach waits for a creator (kInitWaitSeconds)


def segment_path(name: str) -> str:
    """The file of queue ``name`` under /dev/shm (ValueError for a bad name)."""
    _native.validate_name(name)
    return os.path.join(SEGMENT_DIR, SEGMENT_PREFIX + name)


def _precheck(name: str, path: str, st: os.stat_result) -> None:
    """Reject files the native core never writes, without waiting on them."""
    age = time.time() - st.st_mtime
    if st.st_size % _PAGE:
        raise SegmentCorruptError(
            f"'{name}' is not a sage_queue segment: its size ({st.st_size} bytes) "
            "is not a whole number of pages")
    with open(path, "rb") as f:
        magic = f.read(len(_MAGIC))
    if magic == _MAGIC:
        return
    if magic.strip(b"\0"):
        raise SegmentCorruptError(f"'{name}' is not a sage_queue segment (bad magic {magic!r})")
    if age > _INIT_WAIT_SECONDS:  # a younger blank file may be one being created right now
        raise SegmentCorruptError(
            f"queue '{name}' was never initialised (its creator may have died while creating it)")


def open_inspect(name: str):
    """Attach to an existing queue in inspect mode; returns (native handle, os.stat_result).

    FileNotFoundError if there is no such queue; SegmentCorruptError for a file that
    is not ours or is damaged; PermissionError for another user's queue.
    """
    path = segment_path(name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no queue named '{name}' (no file {path})") from None
    _precheck(name, path, st)
    handle = _native.ShmQueue(name, mode="inspect")
    # Inspect mode creates a missing segment, so a queue removed since the stat()
    # would leave a fresh, userless one behind: detect that and take it back.
    try:
        now = os.stat(path)
    except FileNotFoundError:
        now = None
    if now is None or now.st_ino != st.st_ino:
        info = handle.info()
        if now is not None and info["creator_pid"] == os.getpid() and not info["attached"]:
            handle.unlink()
        handle.detach()
        raise FileNotFoundError(f"queue '{name}' was removed while inspecting it")
    return handle, st


def describe(name: str) -> dict:
    """Everything the header says (as ``_native.ShmQueue.info()``) plus the file's facts:
    name, path, size_bytes, mode (permission bits), owner_uid, mtime."""
    handle, st = open_inspect(name)
    try:
        info = handle.info()
    finally:
        handle.detach()
    info.update(
        name=name,
        path=segment_path(name),
        size_bytes=st.st_size,
        mode=stat.S_IMODE(st.st_mode),
        owner_uid=st.st_uid,
        mtime=st.st_mtime,
    )
    return info


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_description(d: dict) -> str:
    """The human-readable report printed by the CLI."""
    cap = d["capacity_bytes"]
    used_pct = 100.0 * d["used_bytes"] / cap if cap else 0.0
    maxsize = f"{d['maxsize']}" if d["maxsize"] else "0 (bounded only by capacity)"
    sections = [
        (f"Queue '{d['name']}'", [
            ("path", d["path"]),
            ("file size", f"{d['size_bytes']} bytes"),
            ("mode", f"{d['mode']:04o}"),
            ("owner uid", d["owner_uid"]),
            ("age", f"{max(0.0, time.time() - d['mtime']):.1f} s"),
        ]),
        ("Header", [
            ("layout version", d["layout_version"]),
            ("creator pid", d["creator_pid"]),
            ("capacity_bytes", cap),
            ("maxsize", maxsize),
            ("persistent", _yes(d["persistent"])),
            ("closed", _yes(d["closed"])),
        ]),
        ("Ring offsets", [
            ("head", d["head"]),
            ("read", d["read"]),
            ("tail", d["tail"]),
            ("used_bytes", f"{d['used_bytes']} ({used_pct:.1f}% of capacity)"),
        ]),
        ("Counters", [
            ("items", d["items"]),
            ("unfinished_tasks", d["unfinished_tasks"]),
            *d["stats"].items(),
        ]),
        ("Attached pids", [(pid, "alive" if alive else "dead") for pid, alive in d["attached"]]
         or [("none", "")]),
    ]
    width = max(len(str(k)) for _, rows in sections for k, _ in rows)
    lines = []
    for title, rows in sections:
        lines.append(title)
        lines.extend(f"  {str(k):<{width}}  {v}".rstrip() for k, v in rows)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sage_ext.sage_queue.python.debug_queue",
        description="Show one sage_queue's header, ring offsets, counters and attached pids.")
    parser.add_argument("name", help="queue name (the part after 'sage_queue.' in /dev/shm)")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    args = parser.parse_args(argv)
    try:
        d = describe(args.name)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(d, indent=2) if args.json else format_description(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
