"""`callscore simulate`: replay the UCI rows as prospect events and call outcomes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callscore.commands.arguments import parse_delay, parse_speedup

if TYPE_CHECKING:
    from callscore.simulator.plan import ReplayOptions
    from callscore.simulator.publish import ReplaySummary
    from callscore.simulator.records import MonthCounts

DEFAULT_SPEEDUP = "259200"  # 30 days of event time in 10 wall seconds


def _console(stderr: bool) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from callscore.simulator.data import load_rows
    from callscore.simulator.plan import plan_replay
    from callscore.simulator.publish import run_replay
    from core.settings import load_settings

    settings = load_settings()
    speedup = parse_speedup(args.speedup)
    options = _replay_options(args, settings.base_data_until)
    frame, path = load_rows(Path(args.data) if args.data else None, settings)
    plan = plan_replay(frame, options)
    log = _console(stderr=True)
    pace = "as fast as possible" if speedup == float("inf") else f"x{speedup:g}"
    log.print(
        f"replaying {path} ({len(plan)} records, {plan[0].period} to {plan[-1].period}) to "
        f"{settings.topic_prospects} and {settings.topic_outcomes} at {settings.bootstrap_servers}"
        f", {pace}"
    )

    def month_done(period: str, counts: MonthCounts, wall: float) -> None:
        log.print(
            f"[bold]{period}[/bold]  events {counts.events:,}  outcomes {counts.outcomes:,}  "
            f"malformed {counts.bad_events:,} / {counts.bad_outcomes:,}  ({wall:.1f} s)"
        )

    _print_summary(run_replay(settings, plan, speedup, on_month=month_done))
    return 0


def _replay_options(args: argparse.Namespace, base_data_until: str | None) -> ReplayOptions:
    from callscore.simulator.plan import ReplayOptions

    return ReplayOptions(
        # The trainer's base data stops where the replay starts: no row counted twice.
        start=getattr(args, "from") or base_data_until,
        months=args.months,
        outcome_delay=parse_delay(args.outcome_delay),
        bad_rate=args.bad_rate,
        seed=args.seed,
    )


def _print_summary(summary: ReplaySummary) -> None:
    from rich.table import Table

    table = Table(title="Replay (months of publication, event time)")
    for column in ("month", "events", "outcomes", "malformed events", "malformed outcomes"):
        table.add_column(column, justify="left" if column == "month" else "right")
    rows = [*summary.months.items(), ("total", summary.total)]
    for period, counts in rows:
        table.add_row(
            period,
            f"{counts.events:,}",
            f"{counts.outcomes:,}",
            f"{counts.bad_events:,}",
            f"{counts.bad_outcomes:,}",
        )
    out = _console(stderr=False)
    out.print(table)
    total = summary.total
    # One plain line a script can parse.
    out.print(
        f"replayed events={total.events} outcomes={total.outcomes} "
        f"malformed_events={total.bad_events} malformed_outcomes={total.bad_outcomes} "
        f"wall_seconds={summary.wall_seconds:.2f}",
        highlight=False,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    simulate = subparsers.add_parser(
        "simulate",
        help="replay bank-full.csv in time order: prospect events, then their call outcomes",
        description="Publish each row as a ProspectEvent (ids from its position in the file) "
        "and, after the outcome delay, its CallOutcome (subscribed = y, duration), in one "
        "time-ordered stream with event time mapped to wall time by --speedup.",
    )
    simulate.add_argument("--data", help="bank-full.csv(.gz) (default: as `callscore train`)")
    simulate.add_argument(
        "--from",
        metavar="YYYY-MM",
        help="first month replayed (default: CALLSCORE_BASE_DATA_UNTIL if set, where the "
        "trainer's base data stops; else the first month of the file)",
    )
    simulate.add_argument(
        "--months", type=int, help="calendar months replayed (default: to the end of the file)"
    )
    simulate.add_argument(
        "--speedup",
        default=DEFAULT_SPEEDUP,
        help="event-time seconds per wall second; 0 or inf: as fast as possible "
        f"(default {DEFAULT_SPEEDUP}: a month in about 10 s)",
    )
    simulate.add_argument(
        "--outcome-delay",
        default="2d",
        help="event time between a contact and its outcome: 2d, 12h, 30m, 45s or 0 (default 2d)",
    )
    simulate.add_argument(
        "--bad-rate",
        type=float,
        default=0.0,
        help="malformed extra events and outcomes per good one, 0 to 1 (default 0)",
    )
    simulate.add_argument(
        "--seed", type=int, default=0, help="seed of the malformed extras (default 0)"
    )
    simulate.set_defaults(handler=_cmd_simulate)
