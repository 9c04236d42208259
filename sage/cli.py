"""The `sage` command (also `python -m sage`): info, queue list|cleanup|inspect|remove, bench, demo."""

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
    if args.action == "inspect":
        from sage_ext.sage_queue.python import debug_queue

        return debug_queue.main(args.args, prog="sage queue inspect")
    return manager.main([args.action, *args.args], prog="sage queue")


def _cmd_bench(args) -> int:
    from sage.utils.queue_tool import bench_backends, format_bench

    results = bench_backends(args.backend or None, count=args.items)
    print(json.dumps(results, indent=2) if args.json else format_bench(results))
    return 1 if any("error" in r for r in results) else 0


def _cmd_demo(args) -> int:
    from sage.runtime import demo

    return demo.main(["--mode", args.mode, "--lines", str(args.lines)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage", description="SAGE queue layer and runtime")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="which queue backend is active, and why")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_cmd_info)

    q = sub.add_parser(
        "queue", help="sage_queue segments in /dev/shm: list, cleanup, inspect, remove",
        description="sage_queue segments in /dev/shm. Files at a queue's name that are not a queue "
                    "(a FIFO, symlink, directory, ...) or not trusted (another user's, or not mode "
                    "0600) are listed and never opened; `cleanup --force` removes ours, never "
                    "another user's.",
        epilog="  sage queue list [NAME ...] [--json]\n"
               "  sage queue cleanup [NAME ...] [--force] [--dry-run] [--min-age S]\n"
               "  sage queue inspect NAME [--json]\n"
               "  sage queue remove NAME",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("action", choices=["list", "cleanup", "inspect", "remove"])
    q.add_argument("args", nargs=argparse.REMAINDER, help="the action's arguments (`sage queue ACTION -h`)")
    q.set_defaults(run=_cmd_queue)

    bench = sub.add_parser("bench", help="queue backends side by side")
    bench.add_argument("--backend", action="append", help="repeatable; default: every available one")
    bench.add_argument("--items", type=int, default=100_000)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(run=_cmd_bench)

    demo = sub.add_parser("demo", help="word count as a pipeline: live progress, checked counts")
    demo.add_argument("--mode", choices=["auto", "thread", "process"], default="auto",
                      help="auto: processes over sage_queue where it is built, else threads")
    demo.add_argument("--lines", type=int, default=200_000, help="corpus lines (default 200,000)")
    demo.set_defaults(run=_cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
