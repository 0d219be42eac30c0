"""`callscore monitor, callscore report: online quality and drift of the served models`."""

from __future__ import annotations

import argparse

LOG_LEVELS = ["debug", "info", "warning", "error", "critical"]


def _cmd_monitor(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from core.kafka import ensure_topics
    from core.settings import load_settings
    from streamer.monitor import run_monitor

    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings()
    settings.signing_key()  # fail now: without it no drift baseline can be trusted
    ensure_topics(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_monitor(settings, stop)
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
