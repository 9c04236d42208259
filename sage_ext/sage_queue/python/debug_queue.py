"""Inspect one queue's shared header and counters without changing the queue.

    sage queue inspect NAME [--json]
    python -m sage_ext.sage_queue.python.debug_queue NAME [--json]

The segment is attached in the native "inspect" mode: no user slot is taken, so
inspecting neither keeps a queue alive nor removes it. Before anything is attached, the
file at the queue's name is examined without following a symlink and without blocking
(a FIFO planted there must not hang the tools): only a regular file of our effective
user with mode 0600 is a queue we may read. Anything else is "not a queue" (a FIFO,
symlink, directory, socket or device) or "not trusted" (another user's file, or a
wider mode), refused with what to do about it.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import os
import pwd
import stat
import sys
import time

from . import _native
from .sage_queue import SEGMENT_DIR, SEGMENT_PREFIX, SegmentCorruptError, SegmentUntrustedError

__all__ = [
    "FileFacts",
    "NotAQueueError",
    "SegmentUntrustedError",
    "examine",
    "refuse_untrusted",
    "describe",
    "open_inspect",
    "segment_path",
    "inspect_command",
    "main",
]

# The header's first 8 bytes. Checked here too so a foreign file is reported at once;
# the native attach waits for `ready` first.
_MAGIC = _native.MAGIC
_PAGE = _native.PAGE_BYTES  # every segment the native core creates is a whole number of pages
_INIT_WAIT_SECONDS = _native.INIT_WAIT_SECONDS  # how long the native attach waits for a creator
# Never blocks (a FIFO), never follows a symlink (ELOOP), never leaks into a child.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
CLEANUP_FORCE = "sage queue cleanup --force"


class NotAQueueError(SegmentUntrustedError):
    """The file at a queue's name is not a regular file (a FIFO, symlink, directory,
    socket or device): it is no queue, and nothing opens it as one."""


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISDIR, "directory"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def user_label(uid: int) -> str:
    """'uid 65534 (nobody)'."""
    try:
        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except KeyError:
        return f"uid {uid}"


@dataclasses.dataclass(frozen=True)
class FileFacts:
    """What the file at a queue's name is, read without following or blocking on it."""

    path: str
    file_type: str  #: "regular file", "FIFO", "symlink", "directory", "socket", ...
    owner_uid: int
    mode: int  #: permission bits
    size_bytes: int
    mtime: float
    device: int
    inode: int
    magic: bytes | None = None  #: the first 8 bytes, read only from a trusted file

    @property
    def ours(self) -> bool:
        return self.owner_uid == os.geteuid()

    @property
    def is_queue_file(self) -> bool:
        return self.file_type == "regular file"

    @property
    def trusted(self) -> bool:
        """A regular file of our effective user, mode 0600: the only file we treat as a queue."""
        return self.is_queue_file and self.ours and self.mode == 0o600

    @property
    def owner(self) -> str:
        return user_label(self.owner_uid)

    @property
    def what_to_do(self) -> str:
        if self.ours:
            return f"remove it with `{CLEANUP_FORCE}`"
        return (f"it belongs to {self.owner}: ask that user or root to remove it, "
                "or use another queue name")

    @classmethod
    def from_stat(cls, path: str, st: os.stat_result, magic: bytes | None = None) -> FileFacts:
        return cls(path, _file_type(st.st_mode), st.st_uid, stat.S_IMODE(st.st_mode), st.st_size,
                   st.st_mtime, st.st_dev, st.st_ino, magic)


def segment_path(name: str) -> str:
    """The file of queue ``name`` under /dev/shm (ValueError for a bad name)."""
    _native.validate_name(name)
    return os.path.join(SEGMENT_DIR, SEGMENT_PREFIX + name)


def examine(path: str) -> FileFacts:
    """The facts of the file at ``path``, never blocking and never following a symlink.

    Only a regular file is opened (O_NOFOLLOW | O_NONBLOCK), and the fstat of that
    descriptor decides: a FIFO or a device is never opened at all, and a file swapped
    for a symlink meanwhile fails the open with ELOOP. FileNotFoundError if nothing is there.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no file {path}") from None
    if not stat.S_ISREG(st.st_mode):
        return FileFacts.from_stat(path, st)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise FileNotFoundError(f"no file {path}") from None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENXIO):
            raise
        # Replaced by a symlink (ELOOP) or a socket since the lstat, or not readable by us:
        # what lstat says now is all we need to refuse it.
        try:
            return FileFacts.from_stat(path, os.lstat(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"no file {path}") from None
    try:
        st = os.fstat(fd)
        facts = FileFacts.from_stat(path, st)
        if facts.trusted:
            facts = dataclasses.replace(facts, magic=os.pread(fd, len(_MAGIC), 0))
    finally:
        os.close(fd)
    return facts


def refuse_untrusted(name: str, facts: FileFacts) -> None:
    """Raise NotAQueueError / SegmentUntrustedError unless ``facts`` describe a queue we may open."""
    if not facts.is_queue_file:
        raise NotAQueueError(
            f"'{facts.path}' is not a queue: it is a {facts.file_type} owned by {facts.owner}; "
            f"{facts.what_to_do}")
    if not facts.trusted:
        wrong = [] if facts.ours else [f"owned by {facts.owner}, not by {user_label(os.geteuid())}"]
        if facts.mode != 0o600:
            wrong.append(f"mode {facts.mode:04o}, not 0600")
        raise SegmentUntrustedError(
            f"queue '{name}' is not trusted: '{facts.path}' is {' and '.join(wrong)} (only a file of "
            f"our own user with mode 0600 is opened: whoever can write a segment can run code in its "
            f"consumers); {facts.what_to_do}")


def _precheck(name: str, facts: FileFacts) -> None:
    """Reject files the native core never writes, without waiting on them."""
    age = time.time() - facts.mtime
    if facts.size_bytes % _PAGE:
        raise SegmentCorruptError(
            f"'{name}' is not a sage_queue segment: its size ({facts.size_bytes} bytes) "
            f"is not a whole number of pages; remove it with `{CLEANUP_FORCE}`")
    magic = facts.magic or b""
    if magic == _MAGIC:
        return
    if magic.strip(b"\0"):
        raise SegmentCorruptError(f"'{name}' is not a sage_queue segment (bad magic {magic!r}); "
                                  f"remove it with `{CLEANUP_FORCE}`")
    if age > _INIT_WAIT_SECONDS:  # a younger blank file may be one being created right now
        raise SegmentCorruptError(
            f"queue '{name}' was never initialised (its creator may have died while creating it); "
            f"remove it with `{CLEANUP_FORCE}`")


def open_inspect(name: str):
    """Attach to an existing queue in inspect mode; returns (native handle, FileFacts).

    FileNotFoundError if there is no such queue; NotAQueueError (a SegmentUntrustedError,
    so a PermissionError) for a FIFO, symlink, directory, socket or device at its name;
    SegmentUntrustedError for another user's file or a mode other than 0600;
    SegmentCorruptError for a damaged one.
    """
    path = segment_path(name)
    try:
        facts = examine(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"no queue named '{name}' (no file {path})") from None
    refuse_untrusted(name, facts)
    _precheck(name, facts)
    # The native open checks the file again on its own descriptor (O_NOFOLLOW, O_NONBLOCK,
    # fstat): a swap after our look is refused there.
    handle = _native.ShmQueue(name, mode="inspect")
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (facts.device, facts.inode):
        handle.detach()
        raise FileNotFoundError(f"queue '{name}' was removed while inspecting it")
    return handle, facts


def describe(name: str) -> dict:
    """Everything the header says (as ``_native.ShmQueue.info()``) plus the file's facts:
    name, path, size_bytes, mode (permission bits), owner_uid, mtime."""
    handle, facts = open_inspect(name)
    try:
        info = handle.info()
    finally:
        handle.detach()
    info.update(
        name=name,
        path=facts.path,
        size_bytes=facts.size_bytes,
        mode=facts.mode,
        owner_uid=facts.owner_uid,
        mtime=facts.mtime,
    )
    return info


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


_LIVENESS = {"alive": "alive", "dead": "dead", "unknown": "unknown (another pid namespace)"}


def format_description(d: dict) -> str:
    """The human-readable report printed by the CLI."""
    cap = d["capacity_bytes"]
    used_pct = 100.0 * d["used_bytes"] / cap if cap else 0.0
    maxsize = f"{d['maxsize']}" if d["maxsize"] else "0 (bounded only by capacity)"
    waiters = d.get("waiters") or {}
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
            *((f"waiting in {k}", v) for k, v in waiters.items()),
        ]),
        ("Attached pids", [(pid, _LIVENESS.get(state, state)) for pid, state in d["attached"]]
         or [("none", "")]),
    ]
    width = max(len(str(k)) for _, rows in sections for k, _ in rows)
    lines = []
    for title, rows in sections:
        lines.append(title)
        lines.extend(f"  {str(k):<{width}}  {v}".rstrip() for k, v in rows)
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m sage_ext.sage_queue.python.debug_queue",
        description="Show one sage_queue's header, ring offsets, counters and attached pids.")
    parser.add_argument("name", help=f"queue name (the part after '{SEGMENT_PREFIX}' in {SEGMENT_DIR})")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")
    args = parser.parse_args(argv)
    return inspect_command(args.name, as_json=args.json)


def inspect_command(name: str, as_json: bool = False) -> int:
    """`sage queue inspect NAME [--json]`: print one queue's description; exit status."""
    try:
        d = describe(name)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(d, indent=2) if as_json else format_description(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
