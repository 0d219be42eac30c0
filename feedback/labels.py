"""Labelled history as objects: decode raw prediction-log and outcome values, join them with the
one columnar join (`feedback.label_columns.join_labels`), and keep each labelled row's records.

`feedback.join.OutcomeJoin` is the monitor's streaming join over a bounded window. The trainer,
the scheduler and the report join everything they read: the result must not depend on the order
in which partitions arrive, so a restarted scheduler, or a training run a minute later, sees the
same labels. Objects are for what needs whole records (the report, the recalibration);
millions of calls stay columns (`trainer.outcomes.read_label_columns`).

Invalid records are counted and their first messages kept: the monitor dead-letters invalid
outcomes; here they are only never used as labels.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from feedback.join import Labelled
from feedback.label_columns import (
    OUTCOME_KEYS,
    OUTCOME_PREFIX,
    OUTCOME_ROW,
    PREDICTION_KEYS,
    PREDICTION_ROW,
    LabelColumns,
    LabelCounts,
    join_labels,
)
from schemas import (
    FEATURE_COLUMN_PREFIX,
    FEATURES,
    CallOutcome,
    PredictionRecord,
    decode_outcome,
    join_key,
)
from schemas.decode import DEFAULT_MAX_EVENT_BYTES, InvalidEvent, decode_prediction

# What the labelled history reads of a prediction besides its keys (the trainer's columns too).
PREDICTION_COLUMNS = (*PREDICTION_KEYS, "model_version", "score", "occurred_at")
TIMESTAMP = pa.timestamp("us", tz="UTC")  # the lake's datetime columns

# Messages kept per kind of invalid record (enough to diagnose, bounded on a poisoned topic).
KEPT_ERRORS = 3


@dataclass(frozen=True)
class LabelSet:
    predictions: list[PredictionRecord]  # one per event, in read order
    labelled: list[Labelled]  # one per event (its latest call), by (called_at, event_key)
    columns: LabelColumns  # the same, as the join's columns

    @property
    def counts(self) -> LabelCounts:
        return self.columns.counts

    @property
    def errors(self) -> list[str]:
        return self.columns.errors

    @property
    def labelled_until(self) -> datetime | None:
        return self.columns.labelled_until

    def summary(self) -> str:
        return self.columns.summary()


def label_set(
    predictions: Iterable[bytes | None],
    outcomes: Iterable[bytes | None],
    max_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> LabelSet:
    """Decode both topics' values and join every valid outcome of a call that reached the
    prospect (`CallOutcome.reached`: the labels) to its prediction.

    An outcome names its event by `event_id`, else by `task_id`; an event predicted twice keeps
    its last prediction (same key, same partition: the last one written); an event called twice
    keeps its latest call.
    """
    errors: list[str] = []
    records: list[PredictionRecord] = []
    invalid_predictions = 0
    for raw in predictions:
        try:
            records.append(decode_prediction(raw, max_bytes)[0])
        except InvalidEvent as exc:
            invalid_predictions += 1
            if invalid_predictions <= KEPT_ERRORS:
                errors.append(exc.message)
    valid: list[CallOutcome] = []
    invalid_outcomes = 0
    for raw in outcomes:
        try:
            valid.append(decode_outcome(raw, max_bytes))
        except InvalidEvent as exc:
            invalid_outcomes += 1
            if invalid_outcomes <= KEPT_ERRORS:
                errors.append(exc.message)
    predicted = _table(records, PREDICTION_COLUMNS)
    for name in FEATURES:
        predicted = predicted.append_column(
            FEATURE_COLUMN_PREFIX + name, pa.array([r.features[name] for r in records])
        )
    columns = join_labels(
        predicted,
        _table(valid, (*OUTCOME_KEYS, "duration_seconds")),
        invalid_predictions,
        invalid_outcomes,
        errors,
    )
    return LabelSet(
        predictions=[records[i] for i in columns.predictions[PREDICTION_ROW]],
        labelled=[
            Labelled(records[p], valid[o])
            for p, o in zip(
                columns.labelled[PREDICTION_ROW], columns.labelled[OUTCOME_ROW], strict=True
            )
        ],
        columns=columns,
    )


def _table(models: Sequence[PredictionRecord | CallOutcome], names: tuple[str, ...]) -> pa.Table:
    """The models' fields as the lake's columns (ids as join keys, datetimes as UTC times)."""
    ids = {"event_key": "event_id", "task_key": "task_id"}
    columns = {}
    for name in names:
        if name in ids:
            columns[name] = pa.array([join_key(getattr(m, ids[name])) for m in models], pa.int64())
        elif name.endswith("_at"):
            columns[name] = pa.array([getattr(m, name) for m in models], TIMESTAMP)
        else:
            columns[name] = pa.array([getattr(m, name) for m in models])
    return pa.table(columns)


def records_of(columns: LabelColumns) -> LabelSet:
    """The records behind columns read with their raw values (`value`, `outcome_value`): valid
    by construction, so decoding them again cannot fail."""
    unlimited = sys.maxsize  # sizes were judged when the records were read
    by_row = {
        row: decode_prediction(str(raw).encode(), unlimited)[0]
        for row, raw in zip(
            columns.predictions[PREDICTION_ROW], columns.predictions["value"], strict=True
        )
    }
    labelled = [
        Labelled(by_row[row], decode_outcome(str(raw).encode(), unlimited))
        for row, raw in zip(
            columns.labelled[PREDICTION_ROW],
            columns.labelled[OUTCOME_PREFIX + "value"],
            strict=True,
        )
    ]
    return LabelSet(list(by_row.values()), labelled, columns)
