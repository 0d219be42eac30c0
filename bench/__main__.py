"""The side-by-side benchmark suite (issue 10): one command, one broker it starts itself (Apache
Kafka; `--broker tansu` for the record), every figure that matters a ratio of two scenarios
measured in the same run.

    .venv/bin/python -m bench [--only NAME ...] [--quick | --tiny] [--broker kafka|tansu]
                              [--set FIELD=VALUE ...] [--name NAME]
    .venv/bin/python -m bench compare BEFORE.json AFTER.json

Scenarios, in order (--only picks some; see bench/README.md):
  confluent_loop      ceiling: confluent-kafka consume -> json decode -> produce, no framework
  native_loop         the same loop with BatchScorer and the production model: scoring, no Faust
                      (without the call queue, as scorer_no_queue: a task and a log line per event)
  faust_passthrough   ceiling: a Faust agent built like the scorer, decode + send, no scoring
  scorer_production   `callscore stream`, the production model (trained by the bench), 1 worker,
                      with the call queue (Settings.queue_enabled, the default)
  scorer_no_queue     the same without the call queue (queue_enabled=False), in every round
  scorer_small        the same with the small test model
  scorer_two_workers  two workers, one consumer group, Settings.partitions partitions
  per_event           the production model with batch_max_size=1: one event per predict_proba
  latency             latency at 500 ev/s, then POST /score alone and beside the stream
  latency_only        the latency phase without /score
  reload              a new version published while streaming at a fixed rate
Prints the tables and the targets; writes bench/results/<name>.json (default: suite).
`compare` puts two such results side by side.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from bench import compare
from bench.broker import add_broker_option, exit_on_sigterm
from bench.context import Options
from bench.overrides import add_set_option, overrides_from
from bench.results import write_results
from bench.suite import DEFAULT, SCENARIOS, run
from bench.tables import render
from testkit.factories import small_artifact

COMPARE = "compare"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Side-by-side benchmark suite: ceilings, scorer, per-event peer, /score, "
        "latency, reload, resources; one broker, one run.",
        epilog=f"python -m bench {COMPARE} BEFORE.json AFTER.json: two results side by side.",
    )
    parser.add_argument(
        "--only", nargs="+", choices=list(SCENARIOS), metavar="NAME", help="run only these"
    )
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_true", help="smaller sizes, one round (< 5 min)")
    sizes.add_argument(
        "--tiny",
        action="store_true",
        help="the CI smoke's sizes and the small test model: every code path once, bounded "
        "drains (about 2 min); the figures mean nothing",
    )
    add_broker_option(parser)
    add_set_option(parser)
    parser.add_argument("--backlog", type=int, help="events per throughput scenario")
    parser.add_argument(
        "--rounds", type=int, help="rounds of the throughput scenarios (best reported)"
    )
    parser.add_argument("--rate", type=float, help="events/s of the latency phases")
    parser.add_argument("--seconds", type=float, help="measured steady latency phase, seconds")
    parser.add_argument("--warmup", type=float, help="unmeasured start of that phase, seconds")
    parser.add_argument(
        "--data",
        type=Path,
        help="bank-full.csv(.gz) for the model and the payloads "
        "(default: ../shared/data when it exists, else synthetic)",
    )
    parser.add_argument("--name", default="suite", help="results file bench/results/NAME.json")
    return parser


def options_from(args: argparse.Namespace) -> Options:
    options = Options().quick() if args.quick else Options().tiny() if args.tiny else Options()
    changes = {
        "backlog": args.backlog,
        "rounds": args.rounds,
        "rate": args.rate,
        "latency_seconds": args.seconds,
        "warmup_seconds": args.warmup,
    }
    return replace(options, **{k: v for k, v in changes.items() if v is not None})


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [COMPARE]:
        compare.main(argv[1:])
        return
    args = parser().parse_args(argv)
    exit_on_sigterm()
    only = [name for name in SCENARIOS if name in args.only] if args.only else DEFAULT
    production = small_artifact(1) if args.tiny else None
    result = run(
        only,
        options_from(args),
        overrides_from(args),
        args.data,
        production=production,
        broker_kind=args.broker,
    )
    render(result)
    print(write_results(args.name, result))


if __name__ == "__main__":
    main()
