"""List sage_queue segments in /dev/shm and remove the stale ones.

    python -m sage_ext.sage_queue.python.sage_queue_manager list [NAME ...] [--json]
    python -m sage_ext.sage_queue.python.sage_queue_manager cleanup [NAME ...] [--force]
                                                            [--dry-run] [--min-age S]
    python -m sage_ext.sage_queue.python.sage_queue_manager remove NAME

A segment is stale when no live process is attached to it: its users were killed
before they could detach. Persistent queues and unreadable files are removed
only with ``force``. Segments are read in inspect mode, which changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable

from .debug_queue import describe, open_inspect, segment_path
from .sage_queue import SEGMENT_DIR, SEGMENT_PREFIX

__all__ = ["SegmentInfo", "list_queues", "is_stale", "cleanup", "remove", "main"]


@dataclasses.dataclass(frozen=True)
class SegmentInfo:
    """One segment file in /dev/shm; the queue fields are None when ``error`` is set."""

    name: str  #: queue name (the file name without the prefix)
    path: str  #: the segment file
    size_bytes: int  #: file size
    items: int | None  #: items queued
    capacity_bytes: int | None  #: size of the ring
    maxsize: int | None  #: item limit, 0 for none
    closed: bool | None  #: close() was called
    persistent: bool | None  #: outlives its last user
    live_pids: tuple[int, ...]  #: attached processes still running
    dead_pids: tuple[int, ...]  #: attached processes that died without detaching
    age_seconds: float  #: since the file was last modified (for a queue: created)
    error: str | None  #: why the segment cannot be read (corrupt, not ours, permission denied)


def _read(name: str, path: str) -> SegmentInfo | None:
    """The SegmentInfo of one file; None if it vanished meanwhile."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    age = max(0.0, time.time() - st.st_mtime)
    try:
        d = describe(name)
    except FileNotFoundError:  # removed (perhaps recreated) since the scan
        return None
    except (OSError, ValueError) as exc:  # SegmentCorruptError is an OSError
        return SegmentInfo(name, path, st.st_size, None, None, None, None, None, (), (), age,
                           str(exc))
    return SegmentInfo(
        name=name,
        path=path,
        size_bytes=d["size_bytes"],
        items=d["items"],
        capacity_bytes=d["capacity_bytes"],
        maxsize=d["maxsize"],
        closed=d["closed"],
        persistent=d["persistent"],
        live_pids=tuple(p for p, alive in d["attached"] if alive),
        dead_pids=tuple(p for p, alive in d["attached"] if not alive),
        age_seconds=max(0.0, time.time() - d["mtime"]),
        error=None,
    )


def list_queues(names: Iterable[str] | None = None) -> list[SegmentInfo]:
    """Every segment file under /dev/shm with the sage_queue prefix (or only those of
    ``names``), sorted by name."""
    wanted = None if names is None else {SEGMENT_PREFIX + n for n in names}
    try:
        entries = [e for e in os.scandir(SEGMENT_DIR)
                   if e.name.startswith(SEGMENT_PREFIX) and e.is_file(follow_symlinks=False)
                   and (wanted is None or e.name in wanted)]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda e: e.name)
    infos = (_read(e.name[len(SEGMENT_PREFIX):], e.path) for e in entries)
    return [i for i in infos if i is not None]


def is_stale(info: SegmentInfo, force: bool = False) -> bool:
    """No live process uses it, so it may go; unreadable and persistent ones only with ``force``."""
    if info.error is not None:
        return force
    if info.live_pids:
        return False
    return force or not info.persistent


def _remove_if_stale(name: str, force: bool) -> bool:
    """Check once more, on a fresh attach, then remove; False if it is no longer stale."""
    path = segment_path(name)
    try:
        handle, st = open_inspect(name)
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        if not force:
            return False
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
    try:
        info = handle.info()
        if any(alive for _, alive in info["attached"]) or (info["persistent"] and not force):
            return False  # someone attached since the listing
        handle.unlink()
    finally:
        handle.detach()
    _unlink_leftover(path, st)
    return True


def _unlink_leftover(path: str, st: os.stat_result) -> None:
    """unlink() does nothing to a segment already marked removed by a user who died
    before removing the file: remove that file, but never a queue created since."""
    try:
        if os.stat(path).st_ino == st.st_ino:
            os.unlink(path)
    except FileNotFoundError:
        pass


def cleanup(
    force: bool = False,
    dry_run: bool = False,
    min_age: float = 5.0,
    names: Iterable[str] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> list[str]:
    """Remove stale segments at least ``min_age`` seconds old; returns the names removed.

    The age guard leaves alone a queue whose creator has not attached yet. With
    ``force``, also unreadable files and persistent queues with no live user.
    ``dry_run`` removes nothing and returns what would be removed; ``names`` limits
    the cleanup to those queues. A segment that cannot be removed calls
    ``on_error(name, exc)``, or raises if on_error is None.
    """
    removed = []
    for info in list_queues(names):
        if not is_stale(info, force) or info.age_seconds < min_age:
            continue
        if dry_run:
            removed.append(info.name)
            continue
        try:
            if _remove_if_stale(info.name, force):
                removed.append(info.name)
        except (OSError, ValueError) as exc:
            if on_error is None:
                raise
            on_error(info.name, exc)
    return removed


def remove(name: str) -> None:
    """Remove queue ``name`` now, in use or not, as SageQueue.destroy() does: the queue is
    closed so attached processes see QueueClosed instead of waiting forever.
    FileNotFoundError if there is no such queue; an unreadable file is deleted as is."""
    path = segment_path(name)
    try:
        handle, st = open_inspect(name)
    except FileNotFoundError:
        raise  # not the OSError below: there is nothing to delete
    except OSError:  # corrupt or foreign: nothing to close, just the file
        os.unlink(path)
        return
    try:
        handle.close()
        handle.unlink()
    finally:
        handle.detach()
    _unlink_leftover(path, st)


# ---------------------------------------------------------------- CLI

def _status(info: SegmentInfo) -> str:
    if info.error is not None:
        return f"error: {info.error}"
    if info.live_pids:
        return "in use"
    if is_stale(info):
        return "stale"
    return "persistent, unused"


def _pids(pids: tuple[int, ...]) -> str:
    return ",".join(map(str, pids)) or "-"


def _maybe(value) -> str:
    return "?" if value is None else str(value)


def format_table(infos: list[SegmentInfo]) -> str:
    """A plain aligned table, one segment a line."""
    header = ("NAME", "SIZE", "ITEMS", "CAPACITY", "MAXSIZE", "LIVE PIDS", "DEAD PIDS", "AGE",
              "STATUS")
    rows = [header] + [
        (i.name, str(i.size_bytes), _maybe(i.items), _maybe(i.capacity_bytes), _maybe(i.maxsize),
         _pids(i.live_pids), _pids(i.dead_pids), f"{i.age_seconds:.0f}s",
         _status(i) + (", closed" if i.closed else ""))
        for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header) - 1)]
    numeric = {1, 2, 3, 4, 7}
    lines = []
    for r in rows:
        cells = [r[c].rjust(w) if c in numeric and r is not header else r[c].ljust(w)
                 for c, w in enumerate(widths)]
        lines.append("  ".join(cells + [r[-1]]))
    return "\n".join(lines)


def _cmd_list(args) -> int:
    infos = list_queues(args.names or None)
    if args.json:
        print(json.dumps([dict(dataclasses.asdict(i), stale=is_stale(i)) for i in infos], indent=2))
    elif not infos:
        print(f"no sage_queue segments in {SEGMENT_DIR}")
    else:
        print(format_table(infos))
    return 0


def _cmd_cleanup(args) -> int:
    failures = []

    def on_error(name, exc):
        failures.append(name)
        print(f"error: cannot remove '{name}': {exc}", file=sys.stderr)

    names = args.names or None
    removed = cleanup(force=args.force, dry_run=args.dry_run, min_age=args.min_age, names=names,
                      on_error=on_error)
    verb = "would remove" if args.dry_run else "removed"
    for name in removed:
        print(f"{verb} {name}")
    left = [i for i in list_queues(names) if i.name not in removed and i.name not in failures]
    need_force = [i.name for i in left if not is_stale(i) and is_stale(i, force=True)]
    too_young = [i.name for i in left if is_stale(i, args.force) and i.age_seconds < args.min_age]
    if not removed and not failures:
        print("nothing to clean up")
    if need_force and not args.force:
        print(f"kept (persistent or unreadable; use --force): {', '.join(need_force)}")
    if too_young:
        print(f"kept (younger than --min-age {args.min_age:g}s): {', '.join(too_young)}")
    return 1 if failures else 0


def _cmd_remove(args) -> int:
    try:
        remove(args.name)
    except FileNotFoundError:
        print(f"error: no queue named '{args.name}' in {SEGMENT_DIR}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: cannot remove '{args.name}': {exc}", file=sys.stderr)
        return 1
    print(f"removed {args.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sage_ext.sage_queue.python.sage_queue_manager",
        description=f"List sage_queue segments in {SEGMENT_DIR} and remove stale ones.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list segments with size, items and attached pids")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these queues")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(run=_cmd_list)
    p = sub.add_parser("cleanup", help="remove segments no live process uses")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these queues")
    p.add_argument("--force", action="store_true",
                   help="also remove unreadable segments and persistent queues with no live user")
    p.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    p.add_argument("--min-age", type=float, default=5.0, metavar="S",
                   help="leave segments younger than S seconds (default 5): "
                        "one may be being created")
    p.set_defaults(run=_cmd_cleanup)
    p = sub.add_parser("remove", help="close and remove one queue now, in use or not")
    p.add_argument("name")
    p.set_defaults(run=_cmd_remove)
    args = parser.parse_args(argv)
    if getattr(args, "min_age", 0) < 0:
        parser.error("--min-age must be >= 0")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
