"""The queue commands' arguments, defined once for `sage queue` and for the manager's own
command line (``python -m sage_ext.sage_queue.python.sage_queue_manager``), so the two
never drift. Importable without the native build: `sage queue -h` works on the minimal
profile, and the commands say how to get the build.
"""

from __future__ import annotations

import argparse

__all__ = ["add_commands", "run"]


def _min_age(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not seconds >= 0:  # also refuses NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return seconds


def add_commands(sub) -> None:
    """Add list, inspect, cleanup and remove to an argparse subparsers object."""
    p = sub.add_parser("list", help="segments with size, items and attached pids")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these queues")
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(queue_command="list")
    p = sub.add_parser("inspect", help="one queue's header, ring offsets, counters and pids")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(queue_command="inspect")
    p = sub.add_parser("cleanup", help="remove segments no live process uses")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these queues")
    p.add_argument("--force", action="store_true",
                   help="also remove our files that are not a queue or not trusted, unreadable "
                        "segments, persistent queues with no live user, and queues used only from "
                        "another pid namespace (never another user's file)")
    p.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    p.add_argument("--min-age", type=_min_age, default=5.0, metavar="S",
                   help="leave segments younger than S seconds (default 5): "
                        "one may be being created")
    p.add_argument("--json", action="store_true", help="print what was removed and kept as JSON")
    p.set_defaults(queue_command="cleanup")
    p = sub.add_parser("remove", help="close and remove one queue now, in use or not")
    p.add_argument("name", metavar="NAME")
    p.set_defaults(queue_command="remove")


def run(args: argparse.Namespace) -> int:
    """Run the parsed command: the manager's functions, called directly. Exit status."""
    from . import debug_queue
    from . import sage_queue_manager as manager

    command = args.queue_command
    if command == "list":
        return manager.list_command(args.names or None, as_json=args.json)
    if command == "inspect":
        return debug_queue.inspect_command(args.name, as_json=args.json)
    if command == "cleanup":
        return manager.cleanup_command(args.names or None, force=args.force, dry_run=args.dry_run,
                                       min_age=args.min_age, as_json=args.json)
    return manager.remove_command(args.name)
