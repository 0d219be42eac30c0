"""Training data = the base data, then labelled outcomes: what each model saw, and what happened.

The prediction log holds the features a model scored (the event's own values, as served); the
outcome holds what only the call could tell (`subscribed`, and `duration`, which never becomes a
feature). A row's contact period is the event's `occurred_at`, so the rows sort after the base
data in every time-based split: the rolling backtest and the holdout (the trailing periods)
extend over the new periods by themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from core.errors import BrokerUnavailableError
from core.settings import Settings
from core.topic_reader import Record, read_topics
from feedback.join import Labelled
from feedback.labels import LabelSet, label_set
from schemas import CATEGORIES, FEATURES
from trainer.data import COLUMNS, cut_base

log = logging.getLogger(__name__)

# Reading both topics to their end: ~100k records/s on one core, so generous for a replay.
READ_TIMEOUT_SECONDS = 120.0
ROW_COLUMNS: tuple[str, ...] = (*COLUMNS, "year", "period")


def read_labels(
    settings: Settings, lake_url: str | None = None, timeout: float = READ_TIMEOUT_SECONDS
) -> LabelSet:
    """The one way to read labelled outcomes (`train`, `recalibrate`, `schedule`): every
    prediction joined with its outcome, decoded and joined the same way from wherever it is.

    By default the labelled history is the lake the nightly export writes
    (Settings.export_url), every exported day, plus the records of the prediction log and the
    outcomes topic that are not in it yet: a record exported and still on its topic counts once
    (the lake keeps each record's topic, partition, offset and timestamp), and what retention
    has deleted from the topics is still read from the lake. Without an export yet, the topics
    alone. With `lake_url`, that lake alone (`callscore train --outcomes-from-lake`).
    """
    if lake_url is not None:
        lake = lake_tables(lake_url)
        return label_set(
            lake["predictions"].values, lake["outcomes"].values, settings.max_message_bytes
        )
    lake = lake_tables(settings.export_url)
    exported = set().union(*(table.identities for table in lake.values()))
    topics = [settings.topic_predictions, settings.topic_outcomes]
    tail = [r for r in _read(settings, topics, timeout) if _identity(r) not in exported]
    return label_set(
        lake["predictions"].values + [r.value for r in tail if r.topic == topics[0]],
        lake["outcomes"].values + [r.value for r in tail if r.topic == topics[1]],
        settings.max_message_bytes,
    )


RecordIdentity = tuple[str, int, int, int]  # topic, partition, offset, Kafka timestamp (ms)


def _identity(record: Record) -> RecordIdentity:
    # The timestamp too: a topic deleted and created again starts its offsets at 0 once more.
    return (record.topic, record.partition, record.offset, record.timestamp_ms)


def _read(settings: Settings, topics: list[str], timeout: float) -> list[Record]:
    from confluent_kafka import KafkaException

    try:
        return read_topics(settings, topics, timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"reading {', '.join(topics)} at {settings.bootstrap_servers}: {exc.args[0]}"
        ) from None


@dataclass(frozen=True)
class LakeTable:
    """One exported table's raw values (the lake keeps every record's value, so labels are
    decoded and joined exactly as from Kafka) and the records' identities."""

    values: list[bytes | None]
    identities: set[RecordIdentity]


def _epoch_ms(column: pd.Series) -> list[int]:
    """The lake's `kafka_timestamp` (a UTC timestamp column) as the record's milliseconds."""
    return [stamp.value // 1_000_000 for stamp in pd.to_datetime(column, utc=True)]


def lake_tables(url: str) -> dict[str, LakeTable]:
    """The prediction log and the outcomes as exported to the lake at `url`, every day (empty
    when nothing was exported there yet)."""
    import lake

    found = {}
    for name in ("predictions", "outcomes"):
        frame = lake.read_table(url, name)
        found[name] = LakeTable(
            values=[None if v is None else str(v).encode() for v in frame["value"]],
            identities={
                (str(t), int(p), int(o), int(ts))
                for t, p, o, ts in zip(
                    frame["kafka_topic"],
                    frame["kafka_partition"],
                    frame["kafka_offset"],
                    _epoch_ms(frame["kafka_timestamp"]),
                    strict=True,
                )
            },
        )
    return found


def outcome_rows(labelled: Sequence[Labelled]) -> pd.DataFrame:
    """One bank-schema row per labelled prediction, in event-time order.

    Columns: FEATURES (from the prediction), duration (from the outcome), y ('yes'/'no'),
    year and period ('YYYY-MM') of the event's `occurred_at`.
    """
    ordered = sorted(labelled, key=lambda i: (i.prediction.occurred_at, i.prediction.event_id))
    rows = []
    for item in ordered:
        at = item.prediction.occurred_at
        rows.append(
            {
                **{name: item.prediction.features[name] for name in FEATURES},
                "duration": item.outcome.duration_seconds,
                "y": "yes" if item.subscribed else "no",
                "year": at.year,
                "period": f"{at.year:04d}-{at.month:02d}",
            }
        )
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    for name in (*FEATURES, "duration", "year"):
        if name not in CATEGORIES:
            frame[name] = frame[name].astype(np.int64)
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
    labels: LabelSet | None  # None: base data only (--no-outcomes)
    outcome_periods: list[str]
    overlapping_periods: list[str]  # periods present in both parts (a row may count twice)

    @property
    def outcome_rows(self) -> int:
        return len(self.labels.labelled) if self.labels is not None else 0

    @property
    def labelled_until(self) -> datetime | None:
        return self.labels.labelled_until if self.labels is not None else None


def training_data(
    bank: pd.DataFrame, labels: LabelSet | None, base_data_until: str | None
) -> TrainingData:
    """The base data cut at `base_data_until`, then the labelled outcomes (if any were read)."""
    base = cut_base(bank, base_data_until)
    rows = outcome_rows(labels.labelled) if labels is not None else outcome_rows([])
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
