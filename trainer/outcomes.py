"""Training data = the base data, then labelled outcomes: what each model saw, and what happened.

The prediction log holds the features a model scored (the event's own values, as served); the
outcome holds what only the call could tell (`subscribed`, and `duration`, which never becomes a
feature). A row's contact period is the event's `occurred_at`, so the rows sort after the base
data in every time-based split: the rolling backtest and the holdout (the trailing periods)
extend over the new periods by themselves.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import BrokerUnavailableError
from core.settings import Settings
from core.topic_reader import Span, offsets_at, partitions_of, read_spans
from feedback.label_columns import OUTCOME_KEYS, PREDICTION_KEYS, LabelColumns, join_labels
from feedback.labels import KEPT_ERRORS, LabelSet, records_of
from lake.days import day_window
from schemas import CATEGORIES, FEATURE_COLUMN_PREFIX, FEATURES, join_key
from trainer.data import COLUMNS, cut_base

log = logging.getLogger(__name__)

# Reading both topics to their end: ~100k records/s on one core, so generous for a replay.
READ_TIMEOUT_SECONDS = 120.0
ROW_COLUMNS: tuple[str, ...] = (*COLUMNS, "year", "period")


# A record's identity within a table (each table holds one topic's records): the timestamp
# too, since a topic deleted and created again starts its offsets at 0 once more.
IDENTITY = ("kafka_partition", "kafka_offset", "kafka_timestamp")
CHECK_COLUMNS = (*IDENTITY, "valid", "invalid_reason")
TABLE_KEYS = {"predictions": PREDICTION_KEYS, "outcomes": OUTCOME_KEYS}
IDS = {"event_key": "event_id", "task_key": "task_id"}


def read_label_columns(
    settings: Settings,
    lake_url: str | None = None,
    features: bool = False,
    values: bool = False,
    timeout: float = READ_TIMEOUT_SECONDS,
) -> LabelColumns:
    """The one way to read labelled history, as columns: every prediction joined with its
    outcome (`feedback.label_columns.join_labels`), from wherever it is.

    By default the history is the lake the nightly export writes (Settings.export_url), every
    exported day, read column by column (only the join's columns, the features when asked, the
    raw `value` when asked), plus the topics' tail: the records of the prediction log and the
    outcomes not exported yet. The tail is found by time (`tail_spans`): a record exported and
    still on its topic counts once (the lake keeps each record's topic, partition, offset and
    timestamp), and what retention has deleted from the topics is still in the lake. Without an
    export yet, the topics alone. With `lake_url`, that lake alone (`--outcomes-from-lake`).
    The ids are read as their join keys only (`schemas.join_key`): 4.5 million labelled calls
    join in about 1 GiB (bench/tools/scale.py).
    """

    import lake

    url = lake_url or settings.export_url
    wanted = {
        name: [
            *CHECK_COLUMNS,
            *keys,
            *(["value"] if values else []),
            *(
                [FEATURE_COLUMN_PREFIX + f for f in FEATURES]
                if features and name == "predictions"
                else []
            ),
        ]
        for name, keys in TABLE_KEYS.items()
    }
    frames = {name: _lake_columns(url, name, columns) for name, columns in wanted.items()}
    if lake_url is None:
        exported = lake.complete_days(url, list(TABLE_KEYS))
        cover = covered(exported, ZoneInfo(settings.export_timezone))
        for name, tail in _tail(settings, cover, timeout).items():
            frames[name] = _with_tail(frames[name], tail.select(wanted[name]), cover)
    valid = {name: _valid(frame) for name, frame in frames.items()}
    errors = [
        str(reason)
        for frame in frames.values()
        for reason in frame.filter(pc.invert(frame["valid"]))["invalid_reason"]
        .slice(0, KEPT_ERRORS)
        .to_pylist()
    ]
    return join_labels(
        valid["predictions"].drop(columns=list(CHECK_COLUMNS)),
        valid["outcomes"].drop(columns=list(CHECK_COLUMNS)),
        invalid_predictions=frames["predictions"].num_rows - len(valid["predictions"]),
        invalid_outcomes=frames["outcomes"].num_rows - len(valid["outcomes"]),
        errors=errors,
    )


def _valid(frame: pa.Table) -> pd.DataFrame:
    # Int64: the join keys are nullable 64-bit integers (a float would round them).
    return frame.filter(frame["valid"]).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def _lake_columns(url: str, name: str, columns: list[str]) -> pa.Table:
    """The table's columns from the lake; days exported before the join keys existed read them
    as null, so those are derived from the ids again (once, while such days are kept)."""
    import lake

    table = lake.read_columns(url, name, columns).select(columns)
    missing = pc.and_(table["valid"], pc.is_null(table["event_key"]))
    if not pc.any(missing).as_py():
        return table
    ids = lake.read_columns(url, name, list(IDS.values()))
    for key, column in IDS.items():
        derived = pa.array([join_key(i) for i in ids[column].to_pylist()], pa.int64())
        table = table.set_column(table.schema.get_field_index(key), key, derived)
    return table


def covered(days: list[date], tz: ZoneInfo) -> tuple[int, int] | None:
    """[start, end) ms of the complete days' first unbroken run (`lake.complete_days`): every
    record stamped in it is in the lake (the export cuts days by Kafka timestamp). None
    without a complete day."""
    if not days:
        return None
    end = days[0]
    while end + timedelta(days=1) in days:
        end += timedelta(days=1)
    return day_window(days[0], tz)[0], day_window(end, tz)[1]


Offsets = dict[tuple[str, int], int | None]  # `offsets_at`: first offset stamped at/after


def tail_spans(
    partitions: list[tuple[str, int]], before: Offsets | None, after: Offsets | None
) -> list[dict[tuple[str, int], Span]]:
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


def _tail(settings: Settings, cover: tuple[int, int] | None, timeout: float) -> dict[str, pa.Table]:
    """The records of the prediction log and the outcomes outside the covered days, each as
    its lake table's rows (parsed by the export's own rules)."""
    from confluent_kafka import KafkaException

    import lake.rows
    import lake.tables

    topics = {"predictions": settings.topic_predictions, "outcomes": settings.topic_outcomes}
    try:
        partitions = partitions_of(settings, topics.values())
        records = [
            record
            for spans in tail_spans(partitions, *_cuts(settings, partitions, cover))
            for record in read_spans(settings, spans, timeout)
        ]
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"reading {', '.join(topics.values())} at {settings.bootstrap_servers}: {exc.args[0]}"
        ) from None
    return {
        name: lake.rows.to_arrow(
            lake.tables.TABLES_BY_NAME[name], (r for r in records if r.topic == topic)
        )
        for name, topic in topics.items()
    }


def _cuts(
    settings: Settings, partitions: list[tuple[str, int]], cover: tuple[int, int] | None
) -> tuple[Offsets | None, Offsets | None]:
    if cover is None:
        return None, None
    lateness_ms = round(settings.export_max_lateness_seconds * 1000)
    start, end = cover[0], cover[1] - lateness_ms
    return offsets_at(settings, partitions, start), offsets_at(settings, partitions, end)


def _with_tail(exported: pa.Table, tail: pa.Table, cover: tuple[int, int] | None) -> pa.Table:
    """The tail's records from before the covered days, the lake's rows, then the tail's later
    records, in read order; a tail record the lake already has (same IDENTITY) is dropped."""
    if tail.num_rows == 0:
        return exported
    keys = list(IDENTITY)
    in_lake = pa.array([True] * exported.num_rows, pa.bool_())
    seen = exported.select(keys).append_column("in_lake", in_lake)
    fresh = tail.join(seen, keys=keys, join_type="left outer")
    fresh = fresh.filter(pc.is_null(fresh["in_lake"])).drop_columns(["in_lake"])
    fresh = fresh.sort_by([(k, "ascending") for k in keys[:2]]).select(exported.column_names)
    if cover is None:
        return pa.concat_tables([exported, fresh])
    stamps = pc.cast(fresh["kafka_timestamp"], pa.int64())
    early = pc.less(stamps, cover[0])
    return pa.concat_tables([fresh.filter(early), exported, fresh.filter(pc.invert(early))])


def read_labels(
    settings: Settings, lake_url: str | None = None, timeout: float = READ_TIMEOUT_SECONDS
) -> LabelSet:
    """Labelled history as records (the report, the recalibration): `read_label_columns` with
    the raw values, each labelled row's prediction and outcome decoded again."""
    columns = read_label_columns(settings, lake_url, values=True, timeout=timeout)
    return records_of(columns)


def outcome_rows(labelled: pd.DataFrame) -> pd.DataFrame:
    """One bank-schema row per labelled prediction, in event-time order.

    `labelled`: `LabelColumns.labelled` read with the features (feature_<name> columns).
    Columns: FEATURES (from the prediction), duration (from the outcome), y ('yes'/'no'),
    year and period ('YYYY-MM') of the event's `occurred_at`.
    """
    if labelled.empty:
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    ordered = labelled.sort_values(["occurred_at", "event_key"], kind="stable")
    at = pd.to_datetime(ordered["occurred_at"], utc=True)
    frame = pd.DataFrame(
        {
            **{name: ordered[FEATURE_COLUMN_PREFIX + name].to_numpy() for name in FEATURES},
            "duration": ordered["duration_seconds"].to_numpy(),
            "y": np.where(ordered["subscribed"].to_numpy(dtype=bool), "yes", "no"),
            "year": at.dt.year.to_numpy(),
            "period": at.dt.strftime("%Y-%m").to_numpy(),
        },
        columns=list(ROW_COLUMNS),
    )
    for name in (*FEATURES, "duration", "year"):
        frame[name] = frame[name].astype("str" if name in CATEGORIES else np.int64)
    return frame


def with_outcomes(base: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The base rows followed by the outcome rows, in chronological (period) order.

    The sort is stable: within a period base rows stay first and both keep their own order, so
    with a base cut before the outcomes' first period this is a plain append.
    """
    if rows.empty:
        return base
    combined = pd.concat([base, rows[base.columns]], ignore_index=True)
    return combined.sort_values("period", kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class TrainingData:
    """The frame a training uses and where its rows came from."""

    frame: pd.DataFrame
    base_rows: int
    base_data_until: str | None
    base_periods: list[str]  # in file order
    labels: LabelColumns | None  # None: base data only (--no-outcomes)
    outcome_periods: list[str]
    overlapping_periods: list[str]  # periods present in both parts (a row may count twice)

    @property
    def outcome_rows(self) -> int:
        return len(self.labels.labelled) if self.labels is not None else 0

    @property
    def labelled_until(self) -> datetime | None:
        return self.labels.labelled_until if self.labels is not None else None


def training_data(
    bank: pd.DataFrame, labels: LabelColumns | None, base_data_until: str | None
) -> TrainingData:
    """The base data cut at `base_data_until`, then the labelled outcomes (if any were read,
    with their features: `read_label_columns(..., features=True)`)."""
    base = cut_base(bank, base_data_until)
    rows = outcome_rows(labels.labelled if labels is not None else pd.DataFrame())
    outcome_periods = sorted(set(rows["period"]))
    overlap = sorted(set(outcome_periods) & set(base["period"]))
    if overlap:
        log.warning(
            "outcomes of periods %s overlap the base data: a replay of the base file counts "
            "those rows twice; set CALLSCORE_BASE_DATA_UNTIL to the replay's first month",
            ", ".join(overlap),
        )
    return TrainingData(
        frame=with_outcomes(base, rows),
        base_rows=len(base),
        base_data_until=base_data_until,
        base_periods=[str(p) for p in dict.fromkeys(base["period"])],
        labels=labels,
        outcome_periods=outcome_periods,
        overlapping_periods=overlap,
    )
