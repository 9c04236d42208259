"""The `sage` command (also `python -m sage`): info, queue list|inspect|cleanup|remove, bench, demo."""

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


def _cmd_queue(args) -> int:
    from sage.utils.install_hint import native_build_hint
    from sage.utils.queue_adapter import BackendUnavailableError, is_sage_queue_available

    if not is_sage_queue_available():
        raise BackendUnavailableError("`sage queue` manages sage_queue segments, and the native "
                                      f"extension is not built: {native_build_hint()}")
    from sage_ext.sage_queue.python import queue_commands

    return queue_commands.run(args)


def _cmd_bench(args) -> int:
    from sage.utils.queue_bench import (
        PLACEMENTS,
        bench,
        format_bench,
        plot_bench,
        require_matplotlib,
    )
    from sage.utils.queue_config import normalize_backend_name

    placements = list(dict.fromkeys(args.placement or []))
    for backend in args.backend or []:  # a backend names its placement
        placements += [p.name for p in PLACEMENTS.values()
                       if p.backend == normalize_backend_name(backend, source="--backend")]
    if args.plot:  # before the run: a missing matplotlib should not cost a bench
        try:
            require_matplotlib()
        except ImportError as exc:
            print(f"sage: error: {exc}", file=sys.stderr)
            return 2
    results = bench(list(dict.fromkeys(placements)) or None, count=args.items,
                    ray_count=args.ray_items, batches=tuple(args.batch or (1, 64)))
    print(json.dumps(results, indent=2) if args.json else format_bench(results))
    if args.plot:
        plot_bench(results, args.plot)
        if not args.json:
            print(f"chart: {args.plot}")
    return 1 if any("error" in r for r in results) else 0


def _cmd_demo(args) -> int:
    from sage.runtime import demo

    remote = [] if args.remote is None else ["--remote", args.remote]
    return demo.main(["--mode", args.mode, "--lines", str(args.lines), *remote])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sage", description="SAGE queue layer and runtime")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--verbose", action="store_true",
                        help="let Ray's start-up and log lines through (hidden by default)")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="which queue backend is active, and why")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=_cmd_info)

    q = sub.add_parser(
        "queue", help="sage_queue segments in /dev/shm: list, inspect, cleanup, remove",
        description="sage_queue segments in /dev/shm. Files at a queue's name that are not a queue "
                    "(a FIFO, symlink, directory, ...) or not trusted (another user's, or not mode "
                    "0600) are listed and never opened; `cleanup --force` removes ours, never "
                    "another user's.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from sage_ext.sage_queue.python import queue_commands  # no native build needed to parse

    queue_commands.add_commands(q.add_subparsers(dest="action", required=True, metavar="ACTION"))
    q.set_defaults(run=_cmd_queue)

    bench = sub.add_parser(
        "bench", help="each queue backend beside the usual alternative for its placement",
        description="processes: sage_queue vs multiprocessing.Queue; threads: python_queue vs "
                    "queue.Queue; Ray: ray_queue vs ray.util.queue.Queue. One producer, one "
                    "consumer, small dicts, one at a time and in batches.")
    bench.add_argument("--placement", action="append", choices=["processes", "threads", "ray"],
                       help="repeatable; default: every placement whose backend is installed")
    bench.add_argument("--backend", action="append", metavar="BACKEND",
                       help="the placement of this backend (sage_queue: processes, python_queue: "
                            "threads, ray_queue: ray); repeatable")
    bench.add_argument("--items", type=_positive_int, default=100_000,
                       help="items per run (default 100,000)")
    bench.add_argument("--ray-items", type=_positive_int, default=2_000,
                       help="items per Ray run of one item a call (default 2,000: ~1 ms each)")
    bench.add_argument("--batch", type=_positive_int, action="append",
                       help="batch sizes, repeatable (default 1 and 64)")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--plot", metavar="FILE.png",
                       help="also draw a bar chart (needs matplotlib: the extra `plot`)")
    bench.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="let Ray's start-up and log lines through (as `sage --verbose`)")
    bench.set_defaults(run=_cmd_bench)

    demo = sub.add_parser("demo", help="word count as a pipeline: live progress, checked counts")
    demo.add_argument("--mode", choices=["auto", "thread", "process"], default="auto",
                      help="auto: processes over sage_queue where it is built, else threads")
    demo.add_argument("--lines", type=int, default=200_000, help="corpus lines (default 200,000)")
    demo.add_argument("--remote", nargs="?", const="", default=None, metavar="ADDRESS",
                      help="run on Ray (each instance an actor): the cluster at ADDRESS, else "
                           "SAGE_QUEUE_RAY_ADDRESS, else a local Ray on 127.0.0.1")
    demo.set_defaults(run=_cmd_demo)
    return parser


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def _version() -> str:
    """The installed distribution's version (the wheel's or the checkout's metadata)."""
    import importlib.metadata

    import sage

    try:
        return importlib.metadata.version("sage-queue")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that was never installed
        return sage.__version__


def _quiet_ray(verbose: bool) -> None:
    """Keep Ray's start-up chatter out of the command's output unless --verbose."""
    if verbose:
        import logging

        from sage.utils import ray_queue

        ray_queue.RAY_LOGGING_LEVEL = logging.INFO
    elif not (os.environ.get("RAY_ADDRESS") or os.environ.get("SAGE_QUEUE_RAY_ADDRESS")):
        # Ray 2.60 warns about token authentication when it starts a cluster; the local one
        # it starts for us listens on 127.0.0.1 only. A cluster to join keeps its own setting.
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sage.utils.queue_adapter import BackendUnavailableError

    _quiet_ray(args.verbose)

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
