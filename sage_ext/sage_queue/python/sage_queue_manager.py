"""List sage_queue segments in /dev/shm and remove the stale ones.

    sage queue list [NAME ...] [--json]
    sage queue inspect NAME [--json]
    sage queue cleanup [NAME ...] [--force] [--dry-run] [--min-age S] [--json]
    sage queue remove NAME
    (also: python -m sage_ext.sage_queue.python.sage_queue_manager ...)

A segment is stale when no process is attached to it any more: its users were killed
before they could detach. A queue used by a process in another pid namespace (a
container sharing /dev/shm) cannot be judged from here: it counts as in use, and only
``--force`` removes it. Persistent queues and unreadable files are removed only with
``--force``, too. Segments are read in inspect mode, which changes nothing.

Every file at a queue's name is examined first without following a symlink or blocking
on a FIFO. A file that is not a regular file is "not a queue"; another user's file, or
one whose mode is not 0600, is "not trusted". Both are listed and never opened;
``--force`` (and ``remove``) deletes them only when they are ours, never another user's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable

from .debug_queue import (
    CLEANUP_FORCE,
    FileFacts,
    examine,
    open_inspect,
    refuse_untrusted,
    segment_path,
    user_label,
)
from .queue_commands import add_commands, run
from .sage_queue import SEGMENT_DIR, SEGMENT_PREFIX

__all__ = ["SegmentInfo", "list_queues", "is_stale", "cleanup", "remove", "list_command",
           "cleanup_command", "remove_command", "main"]

NOT_A_QUEUE, NOT_TRUSTED, UNREADABLE = "not a queue", "not trusted", "unreadable"


@dataclasses.dataclass(frozen=True)
class SegmentInfo:
    """One file at a queue's name in /dev/shm; the queue fields are None when ``problem`` is set."""

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
    error: str | None  #: why the segment is not used (not a queue, not trusted, corrupt, ...)
    #: attached processes in another pid namespace: alive or not, this one cannot tell
    unknown_pids: tuple[int, ...] = ()
    #: None for a queue; "not a queue" (not a regular file), "not trusted" (not ours or not
    #: mode 0600), or "unreadable" (corrupt, or it could not be read)
    problem: str | None = None
    file_type: str = "regular file"  #: "regular file", "FIFO", "symlink", "directory", ...
    owner_uid: int = -1
    mode: int = 0  #: permission bits
    advice: str | None = None  #: what to do about it, when something is wrong

    @property
    def ours(self) -> bool:
        return self.owner_uid == os.geteuid()


def _read(name: str, path: str) -> SegmentInfo | None:
    """The SegmentInfo of one file; None if it vanished meanwhile."""
    try:
        facts = examine(path)
    except FileNotFoundError:
        return None
    common = dict(name=name, path=path, size_bytes=facts.size_bytes, file_type=facts.file_type,
                  owner_uid=facts.owner_uid, mode=facts.mode,
                  age_seconds=max(0.0, time.time() - facts.mtime))

    def refused(problem: str, error: str, advice: str | None) -> SegmentInfo:
        return SegmentInfo(items=None, capacity_bytes=None, maxsize=None, closed=None, persistent=None,
                           live_pids=(), dead_pids=(), error=error, problem=problem, advice=advice,
                           **common)

    try:
        segment_path(name)
        refuse_untrusted(name, facts)
    except ValueError as exc:  # a file whose name no queue can have
        return refused(NOT_A_QUEUE, str(exc), facts.what_to_do)
    except PermissionError as exc:  # NotAQueueError or SegmentUntrustedError
        return refused(NOT_A_QUEUE if not facts.is_queue_file else NOT_TRUSTED, str(exc), facts.what_to_do)
    try:
        handle, facts = open_inspect(name)
    except FileNotFoundError:  # removed (perhaps recreated) since the scan
        return None
    except PermissionError as exc:  # swapped for an untrusted file since our look
        return refused(NOT_TRUSTED, str(exc), f"remove it with `{CLEANUP_FORCE}`")
    except (OSError, ValueError) as exc:  # SegmentCorruptError is an OSError
        return refused(UNREADABLE, str(exc), f"remove it with `{CLEANUP_FORCE}`")
    try:
        d = handle.info()
    except (OSError, ValueError) as exc:
        return refused(UNREADABLE, str(exc), f"remove it with `{CLEANUP_FORCE}`")
    finally:
        handle.detach()
    by_state = {"alive": [], "dead": [], "unknown": []}
    for pid, state in d["attached"]:
        by_state[state].append(pid)
    unknown = tuple(by_state["unknown"])
    return SegmentInfo(
        items=d["items"],
        capacity_bytes=d["capacity_bytes"],
        maxsize=d["maxsize"],
        closed=d["closed"],
        persistent=d["persistent"],
        live_pids=tuple(by_state["alive"]),
        dead_pids=tuple(by_state["dead"]),
        unknown_pids=unknown,
        error=None,
        advice=(f"used by a process in another pid namespace (a container?): only `{CLEANUP_FORCE}` "
                "removes it" if unknown and not by_state["alive"] else None),
        **common,
    )


def list_queues(names: Iterable[str] | None = None) -> list[SegmentInfo]:
    """Every file under /dev/shm with the sage_queue prefix, of any type (or only those of
    ``names``), sorted by name. Nothing is followed, nothing blocks."""
    wanted = None if names is None else {SEGMENT_PREFIX + n for n in names}
    try:
        entries = [e for e in os.scandir(SEGMENT_DIR)
                   if e.name.startswith(SEGMENT_PREFIX) and (wanted is None or e.name in wanted)]
    except FileNotFoundError:
        return []
    entries.sort(key=lambda e: e.name)
    infos = (_read(e.name[len(SEGMENT_PREFIX):], e.path) for e in entries)
    return [i for i in infos if i is not None]


def is_stale(info: SegmentInfo, force: bool = False) -> bool:
    """No process uses it, so it may go. Only with ``force``: files that are not a queue
    or not trusted (and only ours), unreadable ones, persistent queues, and queues used
    from another pid namespace. A queue with a live user never goes."""
    if info.problem in (NOT_A_QUEUE, NOT_TRUSTED):
        return force and info.ours
    if info.error is not None:
        return force
    if info.live_pids:
        return False
    if info.unknown_pids:
        return force
    return force or not info.persistent


def _unlink_refused(path: str, facts: FileFacts) -> bool:
    """Remove a file that is not a queue or not trusted, if it is ours and still the same
    file; never another user's. False if it is gone or changed meanwhile."""
    if not facts.ours:
        return False
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return False
    if (now.st_dev, now.st_ino, now.st_uid) != (facts.device, facts.inode, facts.owner_uid):
        return False
    try:
        if facts.file_type == "directory":
            os.rmdir(path)  # only an empty one: we never delete what is inside
        else:
            os.unlink(path)  # a symlink itself, never its target
    except FileNotFoundError:
        return False
    return True


def _remove_if_stale(name: str, path: str, force: bool) -> bool:
    """Check once more, on a fresh look and attach, then remove; False if it is no longer stale."""
    try:
        facts = examine(path)
    except FileNotFoundError:
        return False
    if not facts.trusted:
        return force and _unlink_refused(path, facts)
    try:
        handle, facts = open_inspect(name)
    except FileNotFoundError:
        return False
    except PermissionError:  # swapped for something untrusted since the look above
        return force and _unlink_refused(path, examine(path))
    except (OSError, ValueError):
        return force and _unlink_refused(path, facts)
    try:
        info = handle.info()
        states = {state for _, state in info["attached"]}
        if "alive" in states or (not force and ("unknown" in states or info["persistent"])):
            return False  # someone attached since the listing
        handle.unlink()
    finally:
        handle.detach()
    _unlink_leftover(path, facts)
    return True


def _unlink_leftover(path: str, facts: FileFacts) -> None:
    """unlink() does nothing to a segment already marked removed by a user who died
    before removing the file: remove that file, but never a queue created since."""
    try:
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) == (facts.device, facts.inode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _too_young(info: SegmentInfo, min_age: float) -> bool:
    """A queue (or unreadable file) younger than min_age may be one being created right now;
    a file that is not a queue or not trusted never is one."""
    return info.problem not in (NOT_A_QUEUE, NOT_TRUSTED) and info.age_seconds < min_age


def cleanup(
    force: bool = False,
    dry_run: bool = False,
    min_age: float = 5.0,
    names: Iterable[str] | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> list[str]:
    """Remove stale segments at least ``min_age`` seconds old; returns the names removed.

    The age guard leaves alone a queue whose creator has not attached yet (a file that is
    not a queue or not trusted is never one being created: no age guard). With ``force``,
    also our files that are not a queue or not trusted, unreadable files, persistent
    queues with no live user and queues used only from another pid namespace; another
    user's file never. ``dry_run`` removes nothing and returns what would be removed;
    ``names`` limits the cleanup to those queues. A segment that cannot be removed calls
    ``on_error(name, exc)``, or raises if on_error is None.
    """
    removed = []
    for info in list_queues(names):
        if not is_stale(info, force) or _too_young(info, min_age):
            continue
        if dry_run:
            removed.append(info.name)
            continue
        try:
            if _remove_if_stale(info.name, info.path, force):
                removed.append(info.name)
        except (OSError, ValueError) as exc:
            if on_error is None:
                raise
            on_error(info.name, exc)
    return removed


def remove(name: str) -> None:
    """Remove queue ``name`` now, in use or not, as SageQueue.destroy() does: the queue is
    closed so attached processes see QueueClosed instead of waiting forever.

    FileNotFoundError if there is no such queue. A file of ours that is not a queue, not
    trusted or unreadable is deleted as is (a directory only if empty). Another user's
    file is never deleted: SegmentUntrustedError (a PermissionError) says whose it is.
    """
    path = segment_path(name)
    try:
        facts = examine(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no queue named '{name}' (no file {path})") from None
    if not facts.trusted:
        if facts.ours:
            if not _unlink_refused(path, facts):
                raise FileNotFoundError(f"'{path}' was removed or replaced meanwhile")
            return
        refuse_untrusted(name, facts)  # raises, naming the owner and what to do
    try:
        handle, facts = open_inspect(name)
    except FileNotFoundError:
        raise
    except PermissionError:  # swapped since our look: decide on what is there now
        return remove(name)
    except OSError:  # corrupt: nothing to close, just the file
        if not _unlink_refused(path, facts):
            raise FileNotFoundError(f"'{path}' was removed or replaced meanwhile") from None
        return
    try:
        handle.close()
        handle.unlink()
    finally:
        handle.detach()
    _unlink_leftover(path, facts)


# ---------------------------------------------------------------- CLI

def _status(info: SegmentInfo) -> str:
    if info.problem == NOT_A_QUEUE:
        return f"not a queue ({info.file_type}, owner uid {info.owner_uid})"
    if info.problem == NOT_TRUSTED:
        return f"not trusted (owner uid {info.owner_uid}, mode {info.mode:04o})"
    if info.error is not None:
        return f"error: {info.error}"
    if info.live_pids:
        return "in use"
    if info.unknown_pids:
        return "in use (other pid namespace)"
    if is_stale(info):
        return "stale"
    return "persistent, unused"


def _pids(pids: tuple[int, ...]) -> str:
    return ",".join(map(str, pids)) or "-"


def _maybe(value) -> str:
    return "?" if value is None else str(value)


def format_table(infos: list[SegmentInfo]) -> str:
    """A plain aligned table, one segment a line, then what to do about the odd ones."""
    header = ("NAME", "SIZE", "ITEMS", "CAPACITY", "MAXSIZE", "LIVE PIDS", "DEAD PIDS", "AGE",
              "STATUS")
    rows = [header] + [
        (i.name, str(i.size_bytes), _maybe(i.items), _maybe(i.capacity_bytes), _maybe(i.maxsize),
         _pids(i.live_pids + tuple(f"{p}?" for p in i.unknown_pids)), _pids(i.dead_pids),
         f"{i.age_seconds:.0f}s", _status(i) + (", closed" if i.closed else ""))
        for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(len(header) - 1)]
    numeric = {1, 2, 3, 4, 7}
    lines = []
    for r in rows:
        cells = [r[c].rjust(w) if c in numeric and r is not header else r[c].ljust(w)
                 for c, w in enumerate(widths)]
        lines.append("  ".join(cells + [r[-1]]))
    notes = [f"  {i.name}: {i.advice}" for i in infos if i.advice]
    if notes:
        lines += ["", "to do:", *notes]
    if any(i.unknown_pids for i in infos):
        lines.append("(pid? : a process in another pid namespace; alive or not, this one cannot tell)")
    return "\n".join(lines)


def _bad_names(names) -> str | None:
    """The error of the first name no queue can have, else None."""
    for name in names or ():
        try:
            segment_path(name)
        except ValueError as exc:
            return str(exc)
    return None


def list_command(names: list[str] | None = None, as_json: bool = False) -> int:
    """`sage queue list [NAME...] [--json]`: print the segments (only those named); exit status."""
    bad = _bad_names(names)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    infos = list_queues(names)
    if as_json:
        print(json.dumps([dict(dataclasses.asdict(i), stale=is_stale(i)) for i in infos], indent=2))
    elif not infos:
        which = f" named {', '.join(names)}" if names else "s"
        print(f"no sage_queue segment{which} in {SEGMENT_DIR}")
    else:
        print(format_table(infos))
    return 0


def cleanup_command(names: list[str] | None = None, force: bool = False, dry_run: bool = False,
                    min_age: float = 5.0, as_json: bool = False) -> int:
    """`sage queue cleanup [NAME...]`: remove the stale segments (of those named); exit status."""
    bad = _bad_names(names)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    failures = {}

    def on_error(name, exc):
        failures[name] = str(exc)
        print(f"error: cannot remove '{name}': {exc}", file=sys.stderr)

    removed = cleanup(force=force, dry_run=dry_run, min_age=min_age, names=names, on_error=on_error)
    left = [i for i in list_queues(names) if i.name not in removed and i.name not in failures]
    need_force = [i.name for i in left if not is_stale(i) and is_stale(i, force=True)]
    too_young = [i.name for i in left if is_stale(i, force) and _too_young(i, min_age)]
    others = [i for i in left if i.problem in (NOT_A_QUEUE, NOT_TRUSTED) and not i.ours]
    in_use = [i.name for i in left if i.live_pids]
    if as_json:
        print(json.dumps(dict(
            dry_run=dry_run, removed=removed, failed=failures,
            kept=dict(in_use=in_use, need_force=[] if force else need_force, too_young=too_young,
                      another_users=[i.name for i in others]),
            missing=[n for n in names or () if n not in removed and n not in failures
                     and all(i.name != n for i in left)],
        ), indent=2))
        return 1 if failures else 0
    verb = "would remove" if dry_run else "removed"
    for name in removed:
        print(f"{verb} {name}")
    if not removed and not failures:
        print("nothing to clean up")
    for name in names or ():
        if name not in removed and name not in failures and all(i.name != name for i in left):
            print(f"no queue named '{name}' in {SEGMENT_DIR}")
    if need_force and not force:
        print(f"kept (not a queue, not trusted, unreadable, persistent, or used from another pid "
              f"namespace): {', '.join(need_force)}; `{CLEANUP_FORCE}` removes them")
    if too_young:
        print(f"kept (younger than --min-age {min_age:g}s): {', '.join(too_young)}")
    for i in others:
        print(f"left {i.name} ({_status(i)}): it belongs to {user_label(i.owner_uid)}: ask that user or root "
              "to remove it, or use another queue name")
    return 1 if failures else 0


def remove_command(name: str) -> int:
    """`sage queue remove NAME`: close and remove that queue now; exit status."""
    try:
        remove(name)
    except FileNotFoundError:
        print(f"error: no queue named '{name}' in {SEGMENT_DIR}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: cannot remove '{name}': {exc}", file=sys.stderr)
        return 1
    print(f"removed {name}")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m sage_ext.sage_queue.python.sage_queue_manager",
        description=f"List sage_queue segments in {SEGMENT_DIR} and remove stale ones "
                    "(the same as `sage queue`).")
    add_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
