"""`callscore`: one console script, one subcommand per job.

Each area registers its own subcommands (`callscore.commands.*.register(subparsers)`); heavy
imports happen inside the handlers so that `--help` stays fast. Errors that are the user's to
fix print as one line and exit 1; secrets never reach the output. A broker that does not answer
is one such line too: the commands' Kafka client lines go through one filter
(core.kafka_logs.CommandKafkaLogs), which holds back their connection failures and hands the
latest to that line as its reason.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from callscore.commands import (
    demo,
    feedback,
    keys,
    lake,
    queue,
    recalibration,
    scoring,
    simulation,
    training,
)
from core.errors import BrokerUnavailableError, CallscoreError
from core.kafka_logs import CommandKafkaLogs, limit_kafka_logs
from core.settings import load_settings
from trainer.workers import stop_workers


def _cmd_topics(_args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from core.kafka import ensure_topics, topic_shortfalls, topic_specs

    settings = load_settings()
    status = ensure_topics(settings)
    table = Table(
        title=f"Topics on {settings.bootstrap_servers} (replication factor "
        f"{settings.replication_factor}; why each setting: docs/operations.md#topic-settings)"
    )
    for column in ("topic", "partitions", "config", "status"):
        table.add_column(column)
    for spec in topic_specs(settings):
        config = ", ".join(f"{k}={v}" for k, v in spec.config.items())
        table.add_row(spec.name, str(spec.partitions), config, status[spec.name])
    console = Console()
    console.print(table)
    for line in topic_shortfalls(settings):
        console.print(f"warning: {line}", style="yellow", highlight=False)
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    """Apache Kafka as local processes, in the foreground until Ctrl-C or SIGTERM."""
    import time

    from core.local_broker import start_kafka
    from core.local_broker.kafka import fetch_jars, java_binary, kafka_version, topic_replication
    from core.settings import env_vars

    java_binary()
    jars = fetch_jars()
    if args.fetch_only:
        print(f"Apache Kafka {kafka_version()}'s jars are in {jars}")
        return 0
    cluster = start_kafka(nodes=args.nodes, folder=Path(args.dir) if args.dir else None)
    try:
        print(f"{cluster.origin} serves at {cluster.bootstrap_servers}; logs and data in "
              f"{cluster.nodes[0].folder.parent}; Ctrl-C stops it", flush=True)  # fmt: skip
        exports = {"CALLSCORE_BOOTSTRAP_SERVERS": cluster.bootstrap_servers}
        if args.nodes > 1:  # the topics `callscore topics` creates get the cluster's replication
            exports |= env_vars(topic_replication(args.nodes))
        print("export " + " ".join(f"{k}={v}" for k, v in exports.items()), flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while all(node.running for node in cluster.nodes):
            time.sleep(1)
        print("callscore: error: a Kafka node exited: see its server.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.stop()


def _cmd_schemas_export(args: argparse.Namespace) -> int:
    from schemas.export import export_schemas

    for path in export_schemas(Path(args.directory)):
        print(path)
    return 0


def _cmd_schemas_openapi(args: argparse.Namespace) -> int:
    from streamer.openapi import render_openapi

    Path(args.file).write_text(render_openapi())
    print(args.file)
    return 0


def _cmd_schemas_settings_table(args: argparse.Namespace) -> int:
    from callscore.settings_table import write_table

    table = write_table(Path(args.readme) if args.readme else None)
    print(args.readme or table, end="\n" if args.readme else "")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callscore",
        description="Score bank telemarketing prospects from Kafka and publish prioritized call "
        "tasks. Configuration comes from CALLSCORE_* environment variables or a .env file.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topics = sub.add_parser("topics", help="create every topic the system uses (idempotent)")
    topics.set_defaults(handler=_cmd_topics)

    broker = sub.add_parser(
        "broker",
        help="run Apache Kafka (KRaft) locally from Maven Central's jars, without Docker",
        description="Start Apache Kafka as local processes (needs Java 17; Maven fetches the "
        "jars once into ~/.cache/callqueue-scorer) and keep it running until Ctrl-C. Data is "
        "thrown away unless --dir names a folder.",
    )
    broker.add_argument("--nodes", type=int, default=1, help="cluster size (default 1)")
    broker.add_argument("--dir", help="data and log folder (default: a new temporary folder)")
    broker.add_argument(
        "--fetch-only", action="store_true", help="fetch the jars into the cache and exit"
    )
    broker.set_defaults(handler=_cmd_broker)

    schemas = sub.add_parser("schemas", help="message contracts")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True, metavar="ACTION")
    export = schemas_sub.add_parser("export", help="write the JSON Schema files to DIRECTORY")
    export.add_argument("directory", help="output folder (created if missing)")
    export.set_defaults(handler=_cmd_schemas_export)
    openapi = schemas_sub.add_parser(
        "openapi", help="write the HTTP API's OpenAPI description (YAML) to FILE"
    )
    openapi.add_argument("file", help="e.g. docs/openapi.yaml")
    openapi.set_defaults(handler=_cmd_schemas_openapi)
    table = schemas_sub.add_parser(
        "settings-table", help="print the configuration table (Markdown) generated from Settings"
    )
    table.add_argument("--readme", help="rewrite the table between its markers in this file")
    table.set_defaults(handler=_cmd_schemas_settings_table)

    for area in (demo, training, scoring, queue, feedback, recalibration, lake, simulation, keys):
        area.register(sub)
    return parser


def error_line(exc: CallscoreError, kafka_logs: CommandKafkaLogs) -> str:
    """The one line a failed command prints; broker trouble with its client's latest reason."""
    line = f"callscore: error: {exc}"
    if isinstance(exc, BrokerUnavailableError) and kafka_logs.connection_failure:
        line += f" [Kafka client: {kafka_logs.connection_failure}]"
    return line


def interrupt_on_ctrl_c() -> None:
    """Ctrl-C (SIGINT) stops a command even when it was started with SIGINT ignored, as a
    non-interactive shell starts its background jobs: Python keeps an inherited SIG_IGN."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM, how an orchestrator stops a process, ends a command as Ctrl-C does: it raises
    SystemExit(143) in the main thread, the command unwinds (finally blocks run, joblib aborts
    its parallel call) and main ends the training's worker processes. Python's default kills the
    process on the spot and orphans them. A second SIGTERM kills at once; an inherited SIG_IGN
    stays, and a command may install its own handler (monitor, broker, demo, Faust's worker)."""
    main_thread = threading.current_thread() is threading.main_thread()
    if not main_thread or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def exit_now(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: Sequence[str] | None = None) -> int:
    interrupt_on_ctrl_c()
    parser = build_parser()
    args = parser.parse_args(argv)
    # A service may put its own limit in place of this one (the scorer: streamer.app).
    kafka_logs = CommandKafkaLogs()
    attached = limit_kafka_logs(kafka_logs)
    try:
        with sigterm_exits():
            return int(args.handler(args) or 0)
    except CallscoreError as exc:
        print(error_line(exc, kafka_logs), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stop_workers()  # loky's workers outlive a call (trainer.workers)
        for name in attached:  # main() may run inside a test's process
            logging.getLogger(name).removeFilter(kafka_logs)


if __name__ == "__main__":
    sys.exit(main())
