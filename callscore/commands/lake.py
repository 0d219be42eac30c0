"""`callscore export`: the nightly export of every table to date-partitioned Parquet (or CSV)."""

from __future__ import annotations

import argparse

from core.errors import CallscoreError
from lake.layout import FORMATS


def _cmd_export(args: argparse.Namespace) -> int:
    from functools import partial

    from core.settings import load_settings
    from lake.export import export_day
    from lake.layout import parse_day

    settings = load_settings()
    url = args.to or settings.export_url
    if args.schedule:
        import logging

        from lake.scheduler import run_schedule

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        run_schedule(settings, url, partial(export_day, settings, url=url, fmt=args.format))
        return 0
    try:
        day = parse_day(args.date)
    except ValueError as exc:
        raise CallscoreError(f"--date: {exc}") from None
    result = export_day(settings, day, url=url, fmt=args.format)
    print(f"exported {day} ({settings.export_timezone}) to {url}")
    for table in result.tables:
        print(f"  {table.table}: {table.rows} rows, {table.invalid} invalid -> {table.url}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="write one local day of every table (prospects, predictions, call_tasks, outcomes, "
        "dead_letters) as URL/<table>/date=YYYY-MM-DD/part-0.parquet; or do it every night",
        description="The day is the Kafka record timestamp within the local day of "
        "CALLSCORE_EXPORT_TIMEZONE. Re-running a day replaces it; nothing is written unless "
        "every topic was read to its end.",
    )
    when = export.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", help="the local day to export, YYYY-MM-DD")
    when.add_argument(
        "--schedule",
        action="store_true",
        help="run forever: at CALLSCORE_EXPORT_TIME each day, export the previous day",
    )
    export.add_argument(
        "--to", help="a folder or an fsspec URL (s3://, abfs://, …); default CALLSCORE_EXPORT_URL"
    )
    export.add_argument("--format", choices=FORMATS, default="parquet", help="default parquet")
    export.set_defaults(handler=_cmd_export)
