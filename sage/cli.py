"""The `sage` command (also `python -m sage`): info, queue list|cleanup|inspect, bench, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys

__all__ = ["main"]


def _cmd_info(args) -> int:
    from sage.utils.queue_adapter import get_queue_backend_info
    from sage.utils.queue_tool import format_backend_info

    info = get_queue_backend_info()
    print(json.dumps(info, indent=2, default=str) if args.json else format_backend_info(info))
    return 0


def _require_sage_queue(what: str) -> None:
    from sage.utils.queue_adapter import BackendUnavailableError, is_sage_queue_available

    if not is_sage_queue_available():
        raise BackendUnavailableError(
            f"{what}, and the native extension is not built: run `python install.py --full`"
        )


def _manager():
    _require_sage_queue("`sage queue` manages sage_queue segments")
    from sage_ext.sage_queue.python import sage_queue_manager

    return sage_queue_manager


def _cmd_queue(args) -> int:
    manager = _manager()
    forwarded = [args.action]
    if args.action == "inspect":
        from sage_ext.sage_queue.python import debug_queue

        return debug_queue.main([args.name] + (["--json"] if args.json else []))
    if args.json and args.action == "list":
        forwarded.append("--json")
    if args.action == "cleanup":
        forwarded += (["--force"] if args.force else []) + (["--dry-run"] if args.dry_run else [])
    return manager.main(forwarded)


def _cmd_bench(args) -> int:
    from sage.utils.queue_tool import bench_backends, format_bench

    results = bench_backends(args.backend or None, count=args.items)
    print(json.dumps(results, indent=2) if args.json else format_bench(results))
    return 1 if any("error" in r for r in results) else 0


def _cmd_demo(args) -> int:
    _require_sage_queue("`sage demo` runs its pipeline on sage_queue")
    from sage_ext.sage_queue.python import sage_demo

    return sage_demo.main(["--items", str(args.items)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage", description="SAGE queue layer and runtime")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="which queue backend is active, and why")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_cmd_info)

    q = sub.add_parser("queue", help="sage_queue segments in /dev/shm")
    q.add_argument("action", choices=["list", "cleanup", "inspect"])
    q.add_argument("name", nargs="?", help="queue name (inspect)")
    q.add_argument("--json", action="store_true")
    q.add_argument("--force", action="store_true", help="cleanup: also corrupt and persistent ones")
    q.add_argument("--dry-run", action="store_true", help="cleanup: only say what would go")
    q.set_defaults(run=_cmd_queue)

    bench = sub.add_parser("bench", help="queue backends side by side")
    bench.add_argument("--backend", action="append", help="repeatable; default: every available one")
    bench.add_argument("--items", type=int, default=100_000)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(run=_cmd_bench)

    demo = sub.add_parser("demo", help="a multi-process pipeline on sage_queue")
    demo.add_argument("--items", type=int, default=200_000)
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "queue" and args.action == "inspect" and not args.name:
        parser.error("queue inspect needs a queue name")
    from sage.utils.queue_adapter import BackendUnavailableError

    try:
        return args.run(args)
    except (BackendUnavailableError, ValueError) as exc:
        print(f"sage: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `sage info | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
