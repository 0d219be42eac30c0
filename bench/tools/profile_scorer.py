"""Where the scorer's time goes: in process per stage (`micro`), or the suite's own scenarios with
py-spy on the consumer (`stream`).

    .venv/bin/python -m bench.tools.profile_scorer micro [--model FILE] [--label L] \
        [--sizes 1 50 500]
    .venv/bin/python -m bench.tools.profile_scorer stream [--model FILE] \
        [--scenario scorer_production] [--backlog 20000] [--rate 500] [--seconds 10] \
        [--py-spy FILE] [--set FIELD=VALUE ...] [--label L]
    .venv/bin/python -m bench.tools.profile_scorer py-spy-summary FILE

`micro` (the default; bench/tools/micro.py) times each stage of `BatchScorer.score` without a
broker, with FILE (a model.joblib) or the small test model. `stream` runs the suite
(bench/suite.py) on one throughput scenario (`scorer_production` by default, or e.g.
`native_loop`: the same scoring without Faust) and `latency_only`, with FILE as the production
model (default: the one the bench trains), optionally under `py-spy record --gil` during the
backlog (bench/tools/py_spy.py); `py-spy-summary` groups a recorded file by stage and library.

Results go to bench/results/profile_scorer_<label>.json (micro) and profile_stream_<label>.json
(stream: a suite result, `python -m bench compare` reads it), profile_py_spy_<label>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from bench.broker import add_broker_option
from bench.context import Options, no_observer
from bench.overrides import add_set_option, overrides_from
from bench.results import write_results
from bench.suite import THROUGHPUT, run
from bench.tables import render
from bench.tools.micro import SIZES, load_model, micro, print_micro
from bench.tools.py_spy import recorder, summarise_py_spy


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.tools.profile_scorer", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command")
    m = sub.add_parser("micro", help="each stage of BatchScorer.score, in process (default)")
    s = sub.add_parser("stream", help="a suite scenario and latency, optionally under py-spy")
    for p in (m, s):
        p.add_argument("--model", help="model.joblib (default: see above)")
        p.add_argument("--label", default="current")
    m.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    s.add_argument(
        "--scenario", default="scorer_production", choices=sorted(THROUGHPUT), metavar="NAME"
    )
    s.add_argument("--backlog", type=int, default=Options.backlog)
    s.add_argument("--rate", type=float, default=Options.rate)
    s.add_argument("--seconds", type=float, default=10.0, help="steady latency phase")
    s.add_argument("--py-spy", dest="py_spy", type=Path, help="raw py-spy output of the backlog")
    add_set_option(s)
    add_broker_option(s)
    summary = sub.add_parser("py-spy-summary", help="group a raw py-spy file")
    summary.add_argument("file")
    return parser


def stream(args: argparse.Namespace) -> None:
    options = replace(
        Options(), rounds=1, backlog=args.backlog, rate=args.rate, latency_seconds=args.seconds
    )
    production = load_model(args.model) if args.model else None
    observe = recorder(args.py_spy) if args.py_spy else no_observer
    only = [args.scenario, "latency_only"]
    result = run(
        only,
        options,
        overrides_from(args),
        production=production,
        observe=observe,
        broker_kind=args.broker,
    )
    render(result)
    print(write_results(f"profile_stream_{args.label}", result))
    if args.py_spy and args.py_spy.is_file():  # several workers: one file each, see py_spy.py
        summarised = summarise_py_spy(str(args.py_spy))
        print(json.dumps(summarised, indent=2))
        print(write_results(f"profile_py_spy_{args.label}", summarised))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv or ["micro"])
    if args.command == "stream":
        stream(args)
    elif args.command == "py-spy-summary":
        print(json.dumps(summarise_py_spy(args.file), indent=2))
    else:
        result = micro(args.model, args.sizes, args.label)
        print_micro(result)
        print(write_results(f"profile_scorer_{args.label}", result))


if __name__ == "__main__":
    main()
