"""`callscore stream`: one scorer replica (a normal Faust worker; SIGTERM stops it gracefully)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from callscore.commands.arguments import LOG_LEVELS


def _cmd_stream(args: argparse.Namespace) -> int:
    import faust

    from core.kafka import check_queue_partitions, ensure_topics
    from core.settings import load_settings
    from registry.keys import trusted_keys
    from streamer.app import build_app

    settings = load_settings()
    trusted_keys(settings)  # fail now, not at the first model: every scorer needs them
    ensure_topics(settings)
    if settings.queue_enabled:
        check_queue_partitions(settings)
    streamer = build_app(settings)
    streamer.start_queue(logging.getLevelName(args.loglevel.upper()))
    worker = faust.Worker(streamer.app, loglevel=args.loglevel)
    worker.execute_from_commandline()  # returns or raises SystemExit when the worker stops
    return 0


def _cmd_api(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from registry.keys import trusted_keys
    from streamer.api import run_api

    settings = load_settings()
    trusted_keys(settings)  # the same signature checks as the scorer: fail now without keys
    logging.basicConfig(
        level=args.loglevel.upper(),
        format="[%(asctime)s] [%(process)s] [%(levelname)s] %(message)s",
    )
    run_api(settings)
    return 0


def _loglevel_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-l", "--loglevel", default="info", choices=LOG_LEVELS, help="log level (default: info)"
    )


def register(subparsers: Any) -> None:
    stream = subparsers.add_parser(
        "stream",
        help="score prospects from Kafka into prioritized call-task topics (Faust worker)",
        description="Consume the prospects topic, score batches with the newest verified model "
        "from the model topic, keep the live call queue (one open task per prospect: "
        "call-queue; every new task on its tier topic), publish dead letters, and serve /healthz, "
        "/readyz and /metrics on CALLSCORE_HTTP_PORT. The dialers' HTTP API (POST /score, "
        "GET /model, GET /queue, POST /queue/claim) is `callscore api`'s.",
    )
    _loglevel_argument(stream)
    stream.set_defaults(handler=_cmd_stream)

    api = subparsers.add_parser(
        "api",
        help="the dialer-facing HTTP API in its own process (/score, /model, /queue, claims)",
        description="Serve POST /score, GET /model, GET /queue and POST /queue/claim (and "
        "/healthz, /readyz, "
        "/metrics) on CALLSCORE_API_PORT, apart from the stream: it reads the model topic with "
        "the scorer's signature checks and mirrors the call queue; run as many as you need.",
    )
    _loglevel_argument(api)
    api.set_defaults(handler=_cmd_api)
