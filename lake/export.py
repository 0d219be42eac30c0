"""`export_day`: one local day of every table, read from Kafka around the day, then swapped into
the lake.

"The day" is the Kafka record timestamp (producer CreateTime, or the broker's LogAppendTime if
the topic says so) within the local day of `settings.export_timezone`. Each partition is read
from its first offset stamped at or after the day's start (the broker's time index,
`offsets_at`) up to its first record stamped `settings.export_max_lateness_seconds` or more
after the day's end (or its end), keeping the records stamped within the day. The start is a
lower bound (a broker without a time index, such as the local one, answers 0: the partition is
read from its beginning, still correct); the stop is where timestamps are taken as past the day:
a record stamped within the day but written after one stamped that late is not exported.
Nothing is written until every partition has been read, so a run that cannot reach the broker
leaves the previous export as it was; re-running a day replaces its files and, for unchanged
topics, writes the same bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

import pyarrow.compute as pc

from core.errors import BrokerUnavailableError
from core.settings import Settings
from core.topic_reader import Record, Span, offsets_at, partitions_of, read_spans
from lake.days import day_window
from lake.files import encode
from lake.layout import Format
from lake.rows import to_arrow
from lake.store import open_lake, write_day
from lake.tables import TABLES

# librdkafka logs every failed connection attempt (~20 lines a second while the broker is down);
# the export reports a failure as one line instead, so only critical ones are logged.
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
    """Every record of the topics whose timestamp is in [start, end) ms: each partition read
    from its first offset stamped at or after start (a lower bound: timestamps need not follow
    offsets) up to its first record stamped export_max_lateness_seconds after end, or its end;
    only the day's records are kept in memory."""
    start, end = window
    timeout = settings.export_read_timeout_seconds
    deadline = time.monotonic() + timeout
    until = end + round(settings.export_max_lateness_seconds * 1000)
    firsts = offsets_at(settings, partitions_of(settings, topics), start, log_level=KAFKA_LOG_LEVEL)
    # None: no record stamped at or after the day's start, so none of the day either.
    spans = {
        where: Span(first, until_ms=until) for where, first in firsts.items() if first is not None
    }
    try:
        return [
            record
            for record in read_spans(
                settings, spans, max(deadline - time.monotonic(), 0.0), log_level=KAFKA_LOG_LEVEL
            )
            if start <= record.timestamp_ms < end
        ]
    except BrokerUnavailableError:
        if time.monotonic() < deadline:
            raise  # a read error, not the timeout
        raise BrokerUnavailableError(
            f"could not read the day from {len(spans)} partitions of {len(topics)} topics "
            f"within {timeout:.0f} s (CALLSCORE_EXPORT_READ_TIMEOUT_SECONDS)"
        ) from None


def export_day(
    settings: Settings, day: date, url: str | None = None, fmt: Format = "parquet"
) -> ExportResult:
    url = url or settings.export_url
    open_lake(url)  # a URL that cannot work fails now, not after reading every topic
    by_table = {table.name: table.topics(settings) for table in TABLES}
    topics = [topic for names in by_table.values() for topic in names]
    window = day_window(day, ZoneInfo(settings.export_timezone))
    # Over once its last records may have been written: a day exported earlier (today's, by
    # hand) is marked incomplete, and the labelled history reads its records from the topics.
    lateness_ms = round(settings.export_max_lateness_seconds * 1000)
    complete = time.time() * 1000 >= window[1] + lateness_ms
    records = read_day(settings, topics, window)
    arrow = {
        table.name: to_arrow(table, (r for r in records if r.topic in by_table[table.name]))
        for table in TABLES
    }
    files = {name: encode(t, fmt, complete) for name, t in arrow.items()}
    written = write_day(url, day, files, fmt)
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
