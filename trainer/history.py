"""Labelled history = the lake's exported days + the topics' tail, as columns, each record once.

`LabelHistory.read()` is the one way to read labelled outcomes (`train`, `recalibrate`,
`schedule`, `report`): every prediction joined with its outcome by the one columnar join
(`feedback.label_columns.join_labels`), from wherever the records are.

- The lake the nightly export writes (Settings.export_url): every exported day, read column by
  column (the join's columns; the features, the raw `value` when asked). Ids are read as their
  join keys (`schemas.join_key`, 8 bytes a row), so millions of calls fit in memory.
- The tail: the records of the prediction log and the outcomes the lake does not have. The
  lake's complete days (exported after they were over, `lake.reader.is_complete`) from the
  first one on, unbroken, hold every record stamped in them, so the tail is what lies before
  them on the topics and what comes from a lateness before their end (`tail_spans`), found by
  the broker's time index. A tail record the lake also has (same partition, offset and
  timestamp) counts once; what retention deleted from the topics is still in the lake.
- Kept between reads (the scheduler's state between checks): the join (`LabelJoin`), kept up
  to date with the new records, and the tail, continued where the last read ended; so a
  check costs what is new plus one pass over the joined arrays. The lake's rows are not kept
  beside the join's: when the lake changed (a night's export) or at a restart, the join is
  built afresh from the lake, read a day at a time, and the tail looked up in its own days.
  A new instance (a restart) derives the same state from the lake and the topics: nothing is
  kept on disk.

With `lake_url`, that lake alone (`callscore train --outcomes-from-lake`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import BrokerUnavailableError
from core.settings import Settings
from core.topic_reader import Record, Span, offsets_at, partitions_of, read_spans
from feedback.label_columns import (
    OUTCOME_KEYS,
    PREDICTION_KEYS,
    LabelColumns,
    LabelJoin,
    column_array,
    lookup,
)
from feedback.labels import KEPT_ERRORS, LabelSet, records_of
from lake.days import day_window
from schemas import FEATURE_COLUMN_PREFIX, FEATURES, join_key

PARSE_BATCH = 20_000  # tail records decoded at a time
EXTEND_ROWS = 1_000_000  # records added to the join at a time when it is built
# Reading both topics' tail: ~20k records/s decoded on one core, so generous for a replay.
READ_TIMEOUT_SECONDS = 120.0
# A record's identity within a table (each table holds one topic's records): the timestamp
# too, since a topic deleted and created again starts its offsets at 0 once more.
IDENTITY = ("kafka_partition", "kafka_offset", "kafka_timestamp")
CHECK_COLUMNS = (*IDENTITY, "valid", "invalid_reason")
# What a check reads; a training adds the features, the event time and the call's duration.
TABLE_KEYS = {
    "predictions": (*PREDICTION_KEYS, "model_version", "score"),
    "outcomes": OUTCOME_KEYS,
}
IDS = {"event_key": "event_id", "task_key": "task_id"}
Where = tuple[str, int]  # topic, partition
Offsets = dict[Where, int | None]  # `offsets_at`: first offset stamped at or after a time


@dataclass(frozen=True)
class Rows:
    """Some records of one table, compact: the valid ones' columns (no Kafka coordinates) and
    how many were invalid."""

    valid: pa.Table  # the join's and the carried columns
    invalid: int
    errors: list[str]  # the first invalid records' messages

    @classmethod
    def of(cls, table: pa.Table) -> Rows:
        invalid = table.filter(pc.invert(table["valid"]))
        return cls(
            table.filter(table["valid"]).drop_columns(list(CHECK_COLUMNS)),
            invalid.num_rows,
            [str(r) for r in invalid["invalid_reason"].slice(0, KEPT_ERRORS).to_pylist()],
        )


@dataclass(frozen=True)
class LakeDay:
    version: tuple[tuple[str, str], ...]  # lake.store.folder_version: changes when re-exported
    complete: bool


def identity(table: pa.Table) -> np.ndarray:
    """Each record's identity, its partition, offset and timestamp mixed into 64 bits
    (splitmix64): one column where three cost 20 bytes a row; a collision is as unlikely as
    a join key's."""
    partition = column_array(table["kafka_partition"], np.uint64)
    offset = column_array(table["kafka_offset"], np.uint64)
    stamp = column_array(pc.cast(table["kafka_timestamp"], pa.int64()), np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (partition << np.uint64(44)) ^ offset ^ (stamp * np.uint64(0x9E3779B97F4A7C15))
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (x ^ (x >> np.uint64(31))).view(np.int64)


class LabelHistory:
    """The labelled history, read again by `read()` at the cost of what changed since."""

    def __init__(
        self,
        settings: Settings,
        lake_url: str | None = None,
        features: bool = False,
        values: bool = False,
        timeout: float = READ_TIMEOUT_SECONDS,
    ) -> None:
        self._settings = settings
        self._url = lake_url or settings.export_url
        self._with_topics = lake_url is None
        self._timeout = timeout
        training = {
            "predictions": ["occurred_at", *(FEATURE_COLUMN_PREFIX + f for f in FEATURES)],
            "outcomes": ["duration_seconds"],
        }
        self._columns = {
            name: [
                *CHECK_COLUMNS,
                *keys,
                *(training[name] if features else []),
                *(["value"] if values else []),
            ]
            for name, keys in TABLE_KEYS.items()
        }
        self._days: dict[str, dict[date, LakeDay]] = {name: {} for name in TABLE_KEYS}
        self._cover: tuple[int, int] | None = None
        self._tail: dict[str, pa.Table] = {}  # tail records not in the lake, by table
        self._resume: dict[Where, Span] | None = None  # where the tail's next read starts
        self._join: LabelJoin | None = None  # everything read so far, joined
        self._invalid: dict[str, int] = dict.fromkeys(TABLE_KEYS, 0)
        self._errors: list[str] = []

    def read(self) -> LabelColumns:
        lake_changed = [self._refresh_lake(name) for name in TABLE_KEYS]
        if not self._with_topics:
            if any(lake_changed) or self._join is None:
                self._join_afresh({name: self._lake_rows(name) for name in TABLE_KEYS})
        else:
            complete = set.intersection(
                *({d for d, day in self._days[n].items() if day.complete} for n in TABLE_KEYS)
            )
            cover = covered(sorted(complete), ZoneInfo(self._settings.export_timezone))
            restarted, new = self._refresh_tail(cover)
            if restarted or any(lake_changed) or self._join is None:
                # Every tail record looked up in the lake, the join built again from the lake
                # and the tail (a restart, or once an export wrote a day).
                parts = {}
                for name in TABLE_KEYS:
                    tail = _stack(self._tail.get(name), new[name])
                    self._tail[name] = self._not_in_lake(name, tail)
                    parts[name] = self._with_tail(name, self._tail[name], cover)
                self._join_afresh(parts)
            else:
                # The lake is as at the last read: the new records are not in it.
                new = {name: _in_read_order(table) for name, table in new.items()}
                self._extend({name: [Rows.of(table)] for name, table in new.items()})
                self._tail = {name: _stack(self._tail[name], new[name]) for name in TABLE_KEYS}
        assert self._join is not None
        return self._join.result(
            self._invalid["predictions"], self._invalid["outcomes"], self._errors
        )

    def _join_afresh(self, parts: Mapping[str, Iterable[Rows]]) -> None:
        self._join, self._invalid, self._errors = LabelJoin(), dict.fromkeys(TABLE_KEYS, 0), []
        empty = {name: _empty(name, self._valid_columns(name)) for name in TABLE_KEYS}
        self._join.extend(empty["predictions"], empty["outcomes"])  # what a table holds
        self._extend(parts)

    def _extend(self, parts: Mapping[str, Iterable[Rows]]) -> None:
        """The join extended by each table's parts in turn, in batches of about EXTEND_ROWS
        (the parts come a lake day at a time: a few days' columns are read at once besides the
        join's, and the join's arrays are rebuilt a few times, not once a day)."""
        assert self._join is not None
        for name, rows in parts.items():
            batch: list[pa.Table] = []
            for part in rows:
                batch.append(part.valid)
                self._invalid[name] += part.invalid
                self._errors = [*self._errors, *part.errors][:KEPT_ERRORS]
                if sum(t.num_rows for t in batch) >= EXTEND_ROWS:
                    self._join.extend(**{name: pa.concat_tables(batch)})
                    batch = []
            if batch:
                self._join.extend(**{name: pa.concat_tables(batch)})

    def _valid_columns(self, name: str) -> list[str]:
        return [c for c in self._columns[name] if c not in CHECK_COLUMNS]

    def _lake_rows(self, name: str) -> Iterator[Rows]:
        """The table's lake days in order, each read when it is reached."""
        import lake

        for day in sorted(self._days[name]):
            read = lake.read_columns(self._url, name, self._columns[name], dates=[day])
            yield Rows.of(_with_keys(self._url, name, day, read.select(self._columns[name])))

    def _refresh_lake(self, name: str) -> bool:
        """The table's days in the lake and their versions: whether any day changed since the
        last read (new, re-exported or gone)."""
        from lake.reader import is_complete
        from lake.store import days, folder_version

        folders = days(self._url, name)
        versions = {day: folder_version(self._url, folder) for day, folder in folders.items()}
        before = {day: d.version for day, d in self._days[name].items()}
        if versions == before:
            return False
        self._days[name] = {
            day: LakeDay(version, is_complete(self._url, folders[day]))
            for day, version in versions.items()
        }
        return True

    def _refresh_tail(self, cover: tuple[int, int] | None) -> tuple[bool, dict[str, pa.Table]]:
        """The tail's new rows: all of it on the first read (or when the lake's first complete
        day moved: then True), else the records written since the last read."""
        from confluent_kafka import OFFSET_BEGINNING, KafkaException

        settings = self._settings
        topics = {"predictions": settings.topic_predictions, "outcomes": settings.topic_outcomes}
        parsed: dict[str, list[pa.Table]] = {name: [] for name in topics}
        try:
            partitions = partitions_of(settings, topics.values())
            restarted = self._resume is None or _start(cover) != _start(self._cover)
            if restarted:
                spans = tail_spans(partitions, *_cuts(settings, partitions, cover))
                self._tail = {}
            else:
                # A partition that appeared since is read from its beginning.
                assert self._resume is not None
                spans = [{w: self._resume.get(w, Span(OFFSET_BEGINNING)) for w in partitions}]
            for i, part in enumerate(spans):
                reached: dict[Where, int] = {}
                records = read_spans(settings, part, self._timeout, reached=reached)
                for batch in _batches(records, PARSE_BATCH):
                    for name, topic in topics.items():
                        parsed[name].append(_parsed(name, batch, topic, self._columns[name]))
                if i == len(spans) - 1:  # the open-ended span: the next read goes on from it
                    self._resume = {w: Span(reached.get(w, s.start)) for w, s in part.items()}
        except KafkaException as exc:
            raise BrokerUnavailableError(
                f"reading {', '.join(topics.values())} at {settings.bootstrap_servers}: "
                f"{exc.args[0]}"
            ) from None
        self._cover = cover
        return restarted, {
            name: pa.concat_tables(tables) if tables else _empty(name, self._columns[name])
            for name, tables in parsed.items()
        }

    def _not_in_lake(self, name: str, tail: pa.Table) -> pa.Table:
        """The tail's records the lake does not have (same identity), in read order. A lake day
        holds the records stamped within it (the export cuts days by Kafka time): each tail
        record is looked up in its own day's identities, if that day is in the lake."""
        import lake

        if tail.num_rows == 0:
            return tail
        ids = identity(tail)
        stamps = column_array(pc.cast(tail["kafka_timestamp"], pa.int64()), np.int64)
        in_lake = np.zeros(len(ids), bool)
        tz = ZoneInfo(self._settings.export_timezone)
        for day in self._days[name]:
            start, end = day_window(day, tz)
            mine = np.flatnonzero((stamps >= start) & (stamps < end))
            if len(mine):
                exported = np.sort(identity(lake.read_columns(self._url, name, IDENTITY, [day])))
                in_lake[mine] = lookup(exported, ids[mine])[0]
        return _in_read_order(tail.filter(pa.array(~in_lake)))

    def _with_tail(
        self, name: str, tail: pa.Table, cover: tuple[int, int] | None
    ) -> Iterator[Rows]:
        """The tail's records from before the covered days, the lake's days, then the tail's
        later records: the history in read order (`tail`: none of them in the lake)."""
        if cover is not None:
            early = pc.less(pc.cast(tail["kafka_timestamp"], pa.int64()), cover[0])
            yield Rows.of(tail.filter(early))
            tail = tail.filter(pc.invert(early))
        yield from self._lake_rows(name)
        yield Rows.of(tail)


def _in_read_order(table: pa.Table) -> pa.Table:
    return table.sort_by([("kafka_partition", "ascending"), ("kafka_offset", "ascending")])


def _batches(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    """The records a batch at a time: a tail of a day's calls is decoded without holding every
    raw record at once."""
    batch: list[Record] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _start(cover: tuple[int, int] | None) -> int | None:
    return None if cover is None else cover[0]


def _parsed(name: str, records: list[Record], topic: str, columns: list[str]) -> pa.Table:
    import lake.rows
    import lake.tables

    table = lake.tables.TABLES_BY_NAME[name]
    return lake.rows.to_arrow(table, (r for r in records if r.topic == topic), columns)


def _stack(before: pa.Table | None, new: pa.Table) -> pa.Table:
    return new if before is None else pa.concat_tables([before, new])


def _empty(name: str, columns: list[str]) -> pa.Table:
    import lake.tables

    schema = lake.tables.TABLES_BY_NAME[name].schema
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def _with_keys(url: str, name: str, day: date, rows: pa.Table) -> pa.Table:
    """A day exported before the join keys existed reads them as null: derived from the ids."""
    import lake

    if not pc.any(pc.and_(rows["valid"], pc.is_null(rows["event_key"]))).as_py():
        return rows
    ids = lake.read_columns(url, name, list(IDS.values()), dates=[day])
    for key, column in IDS.items():
        derived = pa.array([join_key(i) for i in ids[column].to_pylist()], pa.int64())
        rows = rows.set_column(rows.schema.get_field_index(key), key, derived)
    return rows


def covered(days: list[date], tz: ZoneInfo) -> tuple[int, int] | None:
    """[start, end) ms of the complete days' first unbroken run: every record stamped in it is
    in the lake (the export cuts days by Kafka timestamp). None without a complete day."""
    if not days:
        return None
    end = days[0]
    while end + timedelta(days=1) in days:
        end += timedelta(days=1)
    return day_window(days[0], tz)[0], day_window(end, tz)[1]


def tail_spans(
    partitions: list[Where], before: Offsets | None, after: Offsets | None
) -> list[dict[Where, Span]]:
    """What of each partition is not in the lake: the records before the first one stamped in
    the covered days (`before`: they predate the export) and those from the first one stamped
    a lateness before the covered days' end (`after`: the days after, and late records of the
    last day; the identity check drops what the lake has). Offsets come from the broker's
    time index; where it has none (the local broker answers 0) the second span is the whole
    partition. No cover (None): every partition whole."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

    if before is None or after is None:
        return [{where: Span(OFFSET_BEGINNING) for where in partitions}]
    return [
        # None: nothing is stamped in or after the covered days, all of it predates them.
        {w: Span(OFFSET_BEGINNING, before[w]) for w in partitions if before[w] != 0},
        # None: nothing is stamped that late, nothing to read.
        {w: Span(_or_end(after[w], OFFSET_END)) for w in partitions},
    ]


def _or_end(offset: int | None, end: int) -> int:
    return end if offset is None else offset


def _cuts(
    settings: Settings, partitions: list[Where], cover: tuple[int, int] | None
) -> tuple[Offsets | None, Offsets | None]:
    if cover is None:
        return None, None
    lateness_ms = round(settings.export_max_lateness_seconds * 1000)
    start, end = cover[0], cover[1] - lateness_ms
    return offsets_at(settings, partitions, start), offsets_at(settings, partitions, end)


def read_label_columns(
    settings: Settings,
    lake_url: str | None = None,
    features: bool = False,
    values: bool = False,
    timeout: float = READ_TIMEOUT_SECONDS,
) -> LabelColumns:
    """The labelled history once (a training, a recalibration): `LabelHistory.read`."""
    return LabelHistory(settings, lake_url, features, values, timeout).read()


def read_labels(
    settings: Settings, lake_url: str | None = None, timeout: float = READ_TIMEOUT_SECONDS
) -> LabelSet:
    """Labelled history as records (the report): `read_label_columns` with the raw values,
    each labelled row's prediction and outcome decoded again."""
    return records_of(read_label_columns(settings, lake_url, values=True, timeout=timeout))
