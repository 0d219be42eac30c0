"""`callscore monitor, callscore report: online quality and drift of the served models`."""

from __future__ import annotations

import argparse
from pathlib import Path

from callscore.commands.arguments import LOG_LEVELS

# Reading the whole prediction log for a report can take a while on a long history.
REPORT_READ_TIMEOUT_SECONDS = 300.0


def _cmd_monitor(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from core.kafka import ensure_topics
    from core.settings import load_settings
    from monitor.worker import run_monitor
    from registry.keys import trusted_keys

    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings()
    trusted_keys(settings)  # fail now: without them no drift baseline can be trusted
    ensure_topics(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_monitor(settings, stop)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from core.settings import load_settings
    from core.topic_reader import read_topics
    from feedback.baselines import trusted_baselines
    from feedback.quality_report import ReportInputs, write_report
    from registry.keys import trusted_keys
    from trainer.history import read_labels

    settings = load_settings()
    keys = trusted_keys(settings)
    # the labelled history as every retrain reads it: the lake's days, then the topics' tail
    labels = read_labels(settings, timeout=REPORT_READ_TIMEOUT_SECONDS)
    records = read_topics(settings, [settings.topic_models], timeout=REPORT_READ_TIMEOUT_SECONDS)
    inputs = ReportInputs(
        labelled=labels.labelled,
        predictions=labels.predictions,
        baselines=trusted_baselines(records, keys, settings.model_name),
        totals={**asdict(labels.counts), "first_errors": labels.errors},
    )
    page = write_report(
        Path(args.out), inputs, settings.quality_min_outcomes, settings.retrain_psi_threshold
    )
    counts = labels.counts
    print(
        f"{page}: {counts.predictions} predictions, {len(labels.labelled)} labelled events, "
        f"{counts.unmatched} unmatched and {counts.invalid_outcomes} invalid outcomes"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    monitor = subparsers.add_parser(
        "monitor",
        help="online quality and drift of the served models (Prometheus /metrics)",
        description="Join the prediction log to the call outcomes over a bounded window, "
        "dead-letter invalid outcomes, and serve online ROC-AUC, Brier, conversion by tier and "
        "PSI per model version on CALLSCORE_MONITOR_HTTP_PORT (/metrics). Reads every topic "
        "from the beginning, so a restart rebuilds the same state. SIGTERM stops it.",
    )
    monitor.add_argument(
        "-l", "--loglevel", default="info", choices=LOG_LEVELS, help="log level (default: info)"
    )
    monitor.set_defaults(handler=_cmd_monitor)

    report = subparsers.add_parser(
        "report",
        help="write report.html, charts and quality.json of every model version's online quality",
        description="Read the prediction log, the call outcomes and the model topic from the "
        "beginning, join them, and write quality per model version and per event month "
        "(ROC-AUC, conversion by tier, reliability, PSI) to DIR.",
    )
    report.add_argument("--out", required=True, help="output folder (created if missing)")
    report.set_defaults(handler=_cmd_report)
