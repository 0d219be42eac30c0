"""`callscore demo`: the whole system live on one machine, ending with a reconciled summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from callscore.commands.arguments import parse_delay
from core.errors import CallscoreError


def _cmd_demo(args: argparse.Namespace) -> int:
    from callscore.demo.options import DemoOptions
    from callscore.demo.run import run_demo

    if args.prospects < 1:
        raise CallscoreError(f"--prospects must be at least 1 (got {args.prospects})")
    return run_demo(
        DemoOptions(
            out=Path(args.out),
            data=Path(args.data) if args.data else None,
            synthetic=args.synthetic,
            download_timeout=0.0 if args.no_download else args.download_timeout,
            prospects=args.prospects,
            start=getattr(args, "from"),
            replay_seconds=args.replay_seconds,
            bad_rate=args.bad_rate,
            outcome_delay=parse_delay(args.outcome_delay),
            search=args.search,
            broker=args.broker,
        )
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive (got {text})")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the whole flow live on one machine: broker, train, stream, replay, hot reload",
        description="Start Apache Kafka locally (needs Java; without it, Tansu with a shortened "
        "replay), unless CALLSCORE_BOOTSTRAP_SERVERS is set: then the demo uses that Kafka "
        "with topics of its own; train and publish v1, start a scorer, "
        "the monitor and the API, replay a window of the UCI data with a few malformed events "
        "and the calls with their dispositions (a row's earlier contacts without a decision, "
        "so the queue recycles them rescored, callbacks among them; repeated prospects, late "
        "events, do-not-call entries, slow calls), while one agent claims tasks from the API; "
        "show the live call queue, publish a recalibration (v2), which the scorer hot-reloads, "
        "and end with a summary checking produced = scored + dead-lettered + duplicates and "
        "reporting the queue, the calls, recycles and claims. Logs of every process "
        "go to OUT/logs/; Ctrl-C stops everything.",
    )
    demo.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    demo.add_argument(
        "--data", help="bank-full.csv(.gz) (default: CALLSCORE_DATA, ../shared/data, the cache)"
    )
    demo.add_argument(
        "--synthetic",
        action="store_true",
        help="use synthetic rows even if the UCI data is available (quality means nothing)",
    )
    demo.add_argument(
        "--no-download",
        action="store_true",
        help="when no UCI data is found, use synthetic rows at once instead of downloading",
    )
    demo.add_argument(
        "--download-timeout",
        type=_positive,
        default=10.0,
        help="seconds the UCI download may take before synthetic rows are used (default 10)",
    )
    demo.add_argument(
        "--prospects",
        type=int,
        default=5000,
        help="about how many prospects to replay: the latest months holding that many "
        "(default 5000; at most half the data)",
    )
    demo.add_argument(
        "--from", metavar="YYYY-MM", help="first month replayed (default: from --prospects)"
    )
    demo.add_argument(
        "--replay-seconds",
        type=_positive,
        default=30.0,
        help="wall time the replay takes; sets the speedup (default 30)",
    )
    demo.add_argument(
        "--bad-rate",
        type=float,
        default=0.02,
        help="malformed events and outcomes per valid one (default 0.02)",
    )
    demo.add_argument(
        "--outcome-delay", default="2d", help="event time before a call's outcome (default 2d)"
    )
    demo.add_argument(
        "--search",
        choices=("reference", "fast", "full"),
        default="reference",
        help="search of `callscore train` (default reference: one configuration, no search)",
    )
    demo.add_argument(
        "--broker",
        choices=("kafka", "tansu"),
        default="kafka",
        help="the broker the demo starts when none is configured: Apache Kafka (default; needs "
        "Java, Tansu is the fallback) or the embedded Tansu (the replay is then shortened)",
    )
    demo.set_defaults(handler=_cmd_demo)
