"""Trainer subcommands: train, backtest, schedule, models list|promote, data fetch.

Heavy imports (scikit-learn, pandas, matplotlib, Kafka) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# Both import without scikit-learn or pandas: the parser below needs them for every command.
from trainer.cadence import CADENCES
from trainer.candidates import CANDIDATES, REFERENCE_SELECTED
from trainer.windows import WINDOWS


def _console(stderr: bool = True) -> Any:
    """Rich console; wide when not a terminal (logs, CI) so tables keep their headers."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=_console(),
        transient=False,
    )


def _load(args: argparse.Namespace, settings: Any) -> tuple[Any, str, Path]:
    from trainer.data import load_bank, resolve_data_path

    path = resolve_data_path(Path(args.data) if args.data else None, settings)
    frame, sha = load_bank(path)
    return frame, sha, path


def _cmd_train(args: argparse.Namespace) -> int:
    from rich.table import Table

    from core.settings import load_settings
    from trainer.candidates import search_space
    from trainer.model_card import ARTIFACT_FILE, CARD_FILE, REPORT_FILE
    from trainer.selection import CANDIDATE_METRICS
    from trainer.train import TrainOptions, run_training

    settings = load_settings()
    frame, sha, path = _load(args, settings)
    console = _console()
    console.print(f"data: {path} ({len(frame)} rows, sha256 {sha[:12]}...)")
    options = TrainOptions(
        out=Path(args.out),
        publish=not args.no_publish,
        force=args.force,
        fast=args.search == "fast",
        reference=args.search == "reference",
        search_seconds=args.search_seconds,
        outcomes=not args.no_outcomes,
        outcomes_lake=args.outcomes_from_lake,
    )
    # Progress steps: each screened config, a full backtest and a random CV per family, the
    # calibrated final fit (the reference search: one family, no screen).
    screened = 0 if options.reference else len(search_space(options.fast))
    total = screened + 2 * (1 if options.reference else len(CANDIDATES)) + 1
    with _progress() as progress:
        task = progress.add_task("model selection", total=total)

        def step(label: str) -> None:
            progress.update(task, advance=1, description=label[:70])

        result = run_training(settings, frame, sha, options, step)
        progress.update(task, completed=total, description="done")

    card = result.card
    sources = card.sources
    if sources is not None:
        console.print(_sources_line(sources), soft_wrap=True)
    table = Table(title="Candidates (selection metric: backtest per-month weighted ROC-AUC)")
    table.add_column("candidate")
    for column in CANDIDATE_METRICS:
        table.add_column(column.replace("backtest_", "bt_"), justify="right")
    for name, candidate in card.candidates.items():
        marker = " *" if name == card.selected else ""
        values = candidate.model_dump(include=set(CANDIDATE_METRICS))
        table.add_row(name + marker, *(f"{values[c]:.3f}" for c in CANDIDATE_METRICS))
    out = _console(stderr=False)
    out.print(table)
    for name, variants in card.feature_comparisons.items():
        out.print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in variants.items()))
    if not card.data.is_uci_bank_full:
        out.print("[yellow]not UCI bank-full.csv: do not report these numbers as model quality")
    verdict = "publish" if card.gate.publish else "keep champion"
    rule = getattr(card.gate, "rule", None)
    out.print(f"gate: {verdict} ({card.gate.reason})" + (f" [rule: {rule}]" if rule else ""))
    if result.manifest is not None:
        out.print(f"published {settings.model_name} v{result.manifest.version}")
    out.print(f"wrote {Path(args.out) / CARD_FILE}, {ARTIFACT_FILE}, {REPORT_FILE}")
    return 0


def _sources_line(sources: Any) -> str:
    base = f"base: {sources.base_rows} rows"
    if sources.base_data_until:
        base += f" (periods before {sources.base_data_until})"
    if not sources.outcomes_read:
        return f"{base}; outcomes: not read (--no-outcomes)"
    periods = sources.outcome_periods
    span = f" of {periods[0]}..{periods[-1]}" if periods else ""
    line = (
        f"{base}; outcomes: {sources.outcome_rows} labelled rows{span} "
        f"({sources.outcomes} valid outcomes, {sources.unmatched_outcomes} unmatched, "
        f"{sources.invalid_outcomes} invalid; {sources.invalid_predictions} invalid predictions)"
    )
    if sources.overlapping_periods:
        line += (
            f"; [yellow]periods {', '.join(sources.overlapping_periods)} are in both: "
            "set CALLSCORE_BASE_DATA_UNTIL"
        )
    return line


def _cmd_backtest(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from trainer.cadence import cadence_table, run_cadences
    from trainer.candidates import REFERENCE_CONFIGS
    from trainer.windows import run_windows, window_table

    settings = load_settings()
    frame, _sha, _path = _load(args, settings)
    config = REFERENCE_CONFIGS[args.candidate]
    studying_windows = args.windows is not None
    arms = (
        (args.windows or list(WINDOWS))
        if studying_windows
        else (args.retrain_every or list(CADENCES))
    )
    with _progress() as progress:
        task = progress.add_task("backtest", total=len(arms))

        def step(what: str) -> None:
            progress.update(task, advance=1, description=what)

        if studying_windows:
            windows = run_windows(frame, arms, config, step=step)
            table_frame = window_table(windows)
            title = "Rolling backtest (monthly refits) by training window"
            per_month = {r.window: r.backtest.per_period for r in windows}
        else:
            cadences = run_cadences(frame, arms, config, step=step)
            table_frame = cadence_table(cadences)
            title = "Rolling backtest by retraining cadence"
            per_month = {r.cadence: r.backtest.per_period for r in cadences}
    _print_frame(table_frame, title)
    if args.plot and not studying_windows:
        from trainer.card_report import plot_cadence

        Path(args.plot).mkdir(parents=True, exist_ok=True)
        print(Path(args.plot) / plot_cadence(table_frame, Path(args.plot)))
    if args.json:
        payload = {
            "config": config.label,
            "windows" if studying_windows else "cadences": table_frame.to_dict(orient="records"),
            "per_month": {arm: table.to_dict("records") for arm, table in per_month.items()},
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return 0


def _print_frame(frame: Any, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for row in frame.itertuples(index=False):
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    _console(stderr=False).print(table)


def _cmd_schedule(args: argparse.Namespace) -> int:
    import logging

    from core.settings import load_settings
    from trainer.schedule import Scheduler

    # One line per decision, with its numbers (trainer.schedule logs them).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    scheduler = Scheduler.for_cli(settings, data=args.data, out=Path(args.out), search=args.search)
    runs = 1 if args.once else args.max_runs
    decisions = scheduler.run(max_runs=runs)
    return 1 if decisions and decisions[-1].failed and args.once else 0


def _cmd_models_list(_args: argparse.Namespace) -> int:
    from rich.table import Table

    from core.settings import load_settings
    from registry.model_topic import read_model_records, version_rows

    settings = load_settings()
    rows = version_rows(read_model_records(settings), settings)
    table = Table(title=f"{settings.model_name} on '{settings.topic_models}'")
    columns = (
        "version",
        "created",
        "last published",
        "window",
        "bt monthly AUC",
        "gate AUC diff [interval]",
        "current",
    )
    for column in (*columns, "reason"):
        table.add_column(column)
    for row in rows:
        auc = row["metrics"].get("backtest_monthly_roc_auc")
        table.add_row(
            str(row["version"]),
            row["created_at"].strftime("%Y-%m-%d %H:%M"),
            row["last_published_at"].strftime("%Y-%m-%d %H:%M"),
            row["training_window"],
            "-" if auc is None else f"{auc:.3f}",
            _gate_difference(row["metrics"]),
            "*" if row["current"] else "",
            row["reason"] or "-",
        )
    _console(stderr=False).print(table if rows else "no published versions")
    return 0


def _gate_difference(metrics: dict[str, float]) -> str:
    """Candidate minus champion ROC-AUC on the rows the gate scored both on, and its interval
    ('-': no champion, or the recorded-holdout rule)."""
    from trainer.gate import GATE_METRIC_PREFIX

    value, low, high = (
        metrics.get(GATE_METRIC_PREFIX + name)
        for name in ("difference", "difference_low", "difference_high")
    )
    if value is None or low is None or high is None:
        return "-"
    return f"{value:+.3f} [{low:+.3f}, {high:+.3f}]"


def _cmd_models_promote(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from registry.model_topic import promote

    manifest = promote(load_settings(), args.version)
    print(f"promoted {manifest.model_name} v{manifest.version}: scorers switch to it now")
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from trainer.fetch import UCI_URL, fetch_bank_full, verified_cache

    settings = load_settings()
    if args.if_missing and (cached := verified_cache(settings.data_cache_dir)) is not None:
        print(f"already there and verified: {cached}")
        return 0
    path = fetch_bank_full(settings.data_cache_dir, args.source or UCI_URL)
    print(f"verified {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="select, evaluate and publish a model")
    train.add_argument("--data", help="bank-full.csv(.gz); default: CALLSCORE_DATA, shared, cache")
    train.add_argument("--out", required=True, help="folder for model.joblib, metrics, report")
    train.add_argument("--no-publish", action="store_true", help="do not touch the model topic")
    train.add_argument("--force", action="store_true", help="publish even if worse than champion")
    train.add_argument(
        "--search",
        choices=("full", "fast", "reference"),
        default="full",
        help="hyperparameter search space (fast: tiny, for tests and demos; reference: the "
        f"reference {REFERENCE_SELECTED} configuration only, no search)",
    )
    sources = train.add_mutually_exclusive_group()
    sources.add_argument(
        "--no-outcomes",
        action="store_true",
        help="train on the base data only (default: append the labelled history, the lake at "
        "CALLSCORE_EXPORT_URL and the topics' records not exported yet)",
    )
    sources.add_argument(
        "--outcomes-from-lake",
        metavar="URL",
        help="read the prediction log and the outcomes from this lake of `callscore export` "
        "alone, not the topics",
    )
    train.add_argument(
        "--search-seconds", type=float, default=30.0, help="time box of the screening stage"
    )
    train.set_defaults(handler=_cmd_train)

    backtest = sub.add_parser(
        "backtest", help="rolling backtest under retraining cadences, or training windows"
    )
    backtest.add_argument("--data", help="bank-full.csv(.gz)")
    backtest.add_argument(
        "--retrain-every",
        choices=CADENCES,
        action="append",
        help=f"months between retrains (repeatable; default: all of {', '.join(CADENCES)})",
    )
    backtest.add_argument(
        "--candidate",
        choices=CANDIDATES,
        default=REFERENCE_SELECTED,
        help="which family's reference configuration to backtest",
    )
    backtest.add_argument(
        "--windows",
        nargs="*",
        choices=WINDOWS,
        help="instead of cadences, compare the months a monthly retrain learns from "
        f"(default with the flag alone: all of {', '.join(WINDOWS)})",
    )
    backtest.add_argument("--json", help="write the results to this JSON file")
    backtest.add_argument("--plot", help="write cadence.png into this folder (cadences)")
    backtest.set_defaults(handler=_cmd_backtest)

    schedule = sub.add_parser(
        "schedule",
        help="retrain on fresh outcomes, drift or falling quality (CALLSCORE_RETRAIN_*); "
        "otherwise recalibrate",
    )
    schedule.add_argument("--data", help="bank-full.csv(.gz): the base data of every retrain")
    schedule.add_argument(
        "--search",
        choices=("reference", "fast", "full"),
        default="reference",
        help=f"search of each retrain (default reference: the {REFERENCE_SELECTED} reference "
        "configuration only, seconds per retrain)",
    )
    schedule.add_argument("--out", default="artifacts/runs", help="one subfolder per run")
    schedule.add_argument("--once", action="store_true", help="one decision, then exit")
    schedule.add_argument("--max-runs", type=int, default=None, help="stop after N decisions")
    schedule.set_defaults(handler=_cmd_schedule)

    models = sub.add_parser("models", help="published model versions")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = models_sub.add_parser("list", help="versions, dates, metrics, current")
    listing.set_defaults(handler=_cmd_models_list)
    promote = models_sub.add_parser("promote", help="serve VERSION again (rollback/forward)")
    promote.add_argument("version", type=int)
    promote.set_defaults(handler=_cmd_models_promote)

    data = sub.add_parser("data", help="training data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download UCI bank-full.csv and verify it")
    fetch.add_argument("--source", help="URL or local path of bank+marketing.zip")
    fetch.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing when the cache already holds the file with the right sha256",
    )
    fetch.set_defaults(handler=_cmd_data_fetch)
