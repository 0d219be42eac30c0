"""`--broker kafka|tansu`: the local broker a bench command starts, one option for every command.

Apache Kafka (core/local_broker/kafka.py) by default; Tansu, the embedded fallback, for the
record: its fetch cost grows with a partition's record batches, so a figure from more than a
minute or two of live traffic on it measures Tansu (docs/local-broker.md). Clients of either get
that broker's own timings (`LocalBroker.client_settings()`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import get_args

from core.local_broker import BrokerKind, LocalBroker, start_local_broker


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker",
        choices=get_args(BrokerKind),
        default="kafka",
        help="the local broker to start: Apache Kafka (default) or Tansu, the embedded fallback "
        "(a backlog or a short phase only: see docs/local-broker.md)",
    )


def exit_on_sigterm() -> None:
    """SIGTERM (`timeout`, `kill`) ends the command as an exception would: its `finally` blocks
    stop the broker and the workers it started (they run in sessions of their own, so nothing
    else stops them), instead of leaving them running. Main thread only (a signal's rule)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))


def start_broker(kind: BrokerKind, log_dir: str | None = None) -> LocalBroker:
    """A fresh local broker of `kind` for a bench command, said on stderr (its logs under
    `log_dir`, which exists); a SIGTERM from now on still stops it (`exit_on_sigterm`)."""
    exit_on_sigterm()
    broker = start_local_broker(kind, log_dir=log_dir)
    print(f"broker: {broker.origin} at {broker.bootstrap_servers}", file=sys.stderr, flush=True)
    return broker
