"""`callscore simulate`: replay the UCI rows as prospect events and call outcomes."""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from callscore.commands.arguments import parse_delay, parse_speedup

if TYPE_CHECKING:
    from callscore.simulator.options import ReplayOptions
    from callscore.simulator.publish import ReplaySummary
    from callscore.simulator.records import MonthCounts
    from core.settings import Settings

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
    options = _replay_options(args, settings)
    frame, path = load_rows(Path(args.data) if args.data else None, settings)
    plan = plan_replay(frame, options)
    log = _console(stderr=True)
    pace = "as fast as possible" if speedup == float("inf") else f"x{speedup:g}"
    log.print(
        f"replaying {path} ({len(plan)} records, {plan[0].period} to {plan[-1].period}) to "
        f"{settings.topic_prospects}, {settings.topic_outcomes} and {settings.topic_do_not_call} "
        f"at {settings.bootstrap_servers}, {pace}"
    )

    def month_done(period: str, counts: MonthCounts, wall: float) -> None:
        log.print(
            f"[bold]{period}[/bold]  events {counts.events:,} (+{counts.late_events:,} late)  "
            f"outcomes {counts.outcomes:,} ({counts.no_decision:,} no decision)  "
            f"malformed {counts.bad_events:,} / "
            f"{counts.bad_outcomes:,}  do-not-call {counts.do_not_call:,} / lifted "
            f"{counts.lifted:,}  ({wall:.1f} s)"
        )

    summary = run_replay(
        settings,
        plan,
        speedup,
        on_month=month_done,
        hold=not args.no_hold,
        hold_skew=parse_delay(args.hold_skew, "--hold-skew"),
    )
    _print_summary(summary)
    return 0


def _replay_options(args: argparse.Namespace, settings: Settings) -> ReplayOptions:
    from callqueue.rules import QueuePolicy
    from callscore.simulator.options import ReplayOptions

    return ReplayOptions(
        # The trainer's base data stops where the replay starts: no row counted twice.
        start=getattr(args, "from") or settings.base_data_until,
        months=args.months,
        outcome_delay=parse_delay(args.outcome_delay),
        bad_rate=args.bad_rate,
        seed=args.seed,
        repeat_rate=args.repeat_rate,
        late_rate=args.late_rate,
        do_not_call_rate=args.do_not_call_rate,
        lift_rate=args.lift_rate,
        slow_call_rate=args.slow_call_rate,
        slow_call_delay=parse_delay(args.slow_call_delay, "--slow-call-delay"),
        attempts=None if args.one_call_per_row else QueuePolicy.of(settings),
    )


def _print_summary(summary: ReplaySummary) -> None:
    from rich.table import Table

    table = Table(title="Replay (months of publication, event time)")
    columns = (
        "month", "events", "late events", "outcomes", "no decision", "malformed events",
        "malformed outcomes", "do-not-call", "lifted",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "month" else "right")
    rows = [*summary.months.items(), ("total", summary.total)]
    for period, counts in rows:
        numbers = (
            counts.events, counts.late_events, counts.outcomes, counts.no_decision,
            counts.bad_events, counts.bad_outcomes, counts.do_not_call, counts.lifted,
        )  # fmt: skip
        table.add_row(period, *(f"{n:,}" for n in numbers))
    out = _console(stderr=False)
    out.print(table)
    total, hold = summary.total, summary.hold
    if hold is not None:
        out.print(
            f"held {hold.held:,} calls until the call queue had decided their event (at most "
            f"{hold.max_seconds:.2f} s, {hold.total_seconds:.1f} s in all; the replay stopped "
            f"{summary.stopped_seconds:.1f} s for them); {hold.too_long:,} held too long "
            f"(published undecided), {hold.skipped:,} with no event to wait for",
            highlight=False,
        )
        held = (
            f"held={hold.held} held_max_seconds={hold.max_seconds:.2f} "
            f"held_too_long={hold.too_long} hold_skipped={hold.skipped} "
            f"stopped_seconds={summary.stopped_seconds:.1f}"
        )
    else:
        held = "hold=off"
    # One plain line a script can parse.
    out.print(
        f"replayed events={total.events} outcomes={total.outcomes} "
        f"no_decision={total.no_decision} "
        f"malformed_events={total.bad_events} malformed_outcomes={total.bad_outcomes} "
        f"late_events={total.late_events} do_not_call={total.do_not_call} "
        f"lifted={total.lifted} wall_seconds={summary.wall_seconds:.2f} {held}",
        highlight=False,
    )


def _queue_arguments(simulate: argparse.ArgumentParser) -> None:
    """The options that make every rule of the call queue fire (defaults: ReplayOptions')."""
    from callscore.simulator.do_not_call import LIFT_AFTER, LIFT_WITHIN, OBJECTION_WITHIN
    from callscore.simulator.late_events import LATE_BY
    from callscore.simulator.options import ReplayOptions
    from core.settings import Settings

    defaults = ReplayOptions()
    late, within = _days(LATE_BY), _days(OBJECTION_WITHIN)
    lift_from, lift_to = _days(LIFT_AFTER), _days(LIFT_AFTER + LIFT_WITHIN)
    shares = (
        ("--repeat-rate", defaults.repeat_rate, "rows that are a later contact of an earlier "
         "row's prospect (the file has no customer id)"),
        ("--late-rate", defaults.late_rate, f"rows' events sent again {late} late, dated "
         f"{late} before the event"),
        ("--do-not-call-rate", defaults.do_not_call_rate, "prospects who object to calls (a "
         f"do-not-call entry within {within} of their first event)"),
        ("--lift-rate", defaults.lift_rate, f"of those objections, lifted {lift_from} to "
         f"{lift_to} later (a tombstone)"),
        ("--slow-call-rate", defaults.slow_call_rate, "outcomes that come after "
         "--slow-call-delay instead of --outcome-delay"),
    )  # fmt: skip
    for flag, default, what in shares:
        simulate.add_argument(
            flag, type=float, default=default, help=f"{what}, 0 to 1 (default {default:g})"
        )
    days = defaults.slow_call_delay / timedelta(days=1)
    ttl = Settings.model_fields["task_ttl_days"].default
    simulate.add_argument(
        "--slow-call-delay",
        default=f"{days:g}d",
        help=f"event time before a slow call's outcome (default {days:g}d: beyond "
        f"CALLSCORE_TASK_TTL_DAYS' default of {ttl:g}, so those tasks expire first)",
    )


def _days(delta: timedelta) -> str:
    days = delta / timedelta(days=1)
    return "a day" if days == 1 else f"{days:g} days"


def register(subparsers: argparse._SubParsersAction) -> None:
    from callscore.simulator.hold import HOLD_TIMEOUT_SECONDS as timeout

    simulate = subparsers.add_parser(
        "simulate",
        help="replay bank-full.csv in time order: prospect events, then their call outcomes",
        description="Publish each row as a ProspectEvent (ids from its position in the file) "
        "and, after the outcome delay, its CallOutcome (subscribed = y, duration), in one "
        "time-ordered stream with event time mapped to wall time by --speedup. So that every "
        "rule of the call queue fires, some rows are later contacts of an earlier row's "
        "prospect, some events come again late, some prospects object (do-not-call entries, "
        "a few lifted later) and some calls come after the task's expiry. A row with "
        "`campaign` = c is replayed as its c contacts (at most CALLSCORE_MAX_ATTEMPTS): the "
        "first event has campaign 1, each call before the last reaches no decision (no answer, "
        "busy, voicemail, a callback), the queue sends the retry, and the last call reports y. "
        "As a dialer never calls a task it has not seen, each call's outcome is held until the "
        "call queue has decided the event it calls (its line on the prediction log, "
        "CALLSCORE_TOPIC_PREDICTIONS), and the records after it wait too: the replay slows "
        f"down rather than outrunning the queue. A call waits at most {timeout:g} s (then it "
        "is published anyway, 'held too long'), and not at all when its event will not come "
        "(a retry the queue did not send, a prospect who objects); the last line counts the "
        "held calls and the longest hold. With --hold-skew only the held prospect's records "
        "wait, the others' for that much event time at most.",
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
        f"(default {DEFAULT_SPEEDUP}: a month in about 10 s, plus the time calls are held)",
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
        "--seed",
        type=int,
        default=0,
        help="seed of the malformed extras, late events, objections and slow calls (default 0)",
    )
    simulate.add_argument(
        "--one-call-per-row",
        action="store_true",
        help="replay each row as one call with its y, its own `campaign` in the event (no "
        "attempts: every outcome is a label, and nothing is held)",
    )
    simulate.add_argument(
        "--no-hold",
        action="store_true",
        help="publish every call at its event time, even before the call queue has decided "
        "the event it calls; for measuring that race only (at a replay's speed most retries' "
        "calls then come before their task and are stale)",
    )
    simulate.add_argument(
        "--hold-skew",
        default="0",
        help="while a call is held, the other prospects' records go on for this much event "
        "time before they wait too (2d, 12h...; default 0: every record waits, the replay in "
        "the plan's order). Keep it well under CALLSCORE_TASK_TTL_DAYS minus the outcome "
        "delay: the queue's stream time runs that far ahead of a held call",
    )
    _queue_arguments(simulate)
    simulate.set_defaults(handler=_cmd_simulate)
