"""`export_day`: one local day of every table, read whole from Kafka, then swapped into the lake.

"The day" is the Kafka record timestamp (producer CreateTime, or the broker's LogAppendTime if
the topic says so) within the local day of `settings.export_timezone`. Nothing is written until
every topic has been read to its end, so a run that cannot reach the broker leaves the previous
export as it was; re-running a day replaces its files and, for unchanged topics, writes the
same bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

import pyarrow.compute as pc

from core.errors import BrokerUnavailableError
from core.settings import Settings
from core.topic_reader import Record, TopicReader
from lake.days import day_window
from lake.files import encode
from lake.layout import Format
from lake.rows import to_arrow
from lake.store import open_lake, write_day
from lake.tables import TABLES

POLL_SECONDS = 0.2
POLL_MAX_RECORDS = 5000
# librdkafka logs every failed connection attempt (~20 lines a second while the broker is down)
# to stderr; the export reports a failure as one line instead, so only critical ones pass.
KAFKA_LOG_LEVEL = 2


@dataclass(frozen=True)
class TableExport:
    table: str
    url: str
    rows: int
    invalid: int


@dataclass(frozen=True)
class ExportResult:
    day: date
    url: str
    format: Format
    tables: tuple[TableExport, ...]


def read_day(settings: Settings, topics: list[str], window: tuple[int, int]) -> list[Record]:
    """Every record of the topics whose timestamp is in [start, end) ms, reading each topic to
    its end (timestamps need not follow offsets); only the day's records are kept in memory."""
    start, end = window
    deadline = time.monotonic() + settings.export_read_timeout_seconds
    kept: list[Record] = []
    with TopicReader(
        settings, topics, group_prefix="callscore-export", log_level=KAFKA_LOG_LEVEL
    ) as reader:
        while True:
            batch = reader.poll(POLL_SECONDS, max_records=POLL_MAX_RECORDS)
            kept.extend(r for r in batch if start <= r.timestamp_ms < end)
            if reader.at_end:
                return kept
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"could not read {len(topics)} topics to their end within "
                    f"{settings.export_read_timeout_seconds:.0f} s "
                    "(CALLSCORE_EXPORT_READ_TIMEOUT_SECONDS)"
                )


def export_day(
    settings: Settings, day: date, url: str | None = None, fmt: Format = "parquet"
) -> ExportResult:
    url = url or settings.export_url
    open_lake(url)  # a URL that cannot work fails now, not after reading every topic
    by_table = {table.name: table.topics(settings) for table in TABLES}
    topics = [topic for names in by_table.values() for topic in names]
    records = read_day(settings, topics, day_window(day, ZoneInfo(settings.export_timezone)))
    arrow = {
        table.name: to_arrow(table, (r for r in records if r.topic in by_table[table.name]))
        for table in TABLES
    }
    written = write_day(url, day, {name: encode(t, fmt) for name, t in arrow.items()}, fmt)
    return ExportResult(
        day=day,
        url=url,
        format=fmt,
        tables=tuple(
            TableExport(
                table=name,
                url=written[name],
                rows=t.num_rows,
                invalid=t.num_rows - int(pc.sum(t.column("valid")).as_py() or 0),
            )
            for name, t in arrow.items()
        ),
    )
