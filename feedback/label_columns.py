"""The one join of labelled history, on columns: predictions and outcomes as Arrow tables in,
one labelled row per event out (pandas), vectorised so a check over millions of calls stays in
seconds and about a hundred bytes a row.

Inputs are the valid records in read order, with the lake's column names: the ids as
`event_key` and `task_key` (`schemas.join_key`: 8 bytes a row where an id string costs ~40),
an outcome's `called_at`, `disposition` and `subscribed`, plus any columns a caller wants
carried through (a prediction's `model_version`, `score`, `occurred_at`, features, raw value;
an outcome's `duration_seconds`).

The rules, the same for the trainer, the scheduler and the report:
- an event predicted twice keeps its last prediction (same key, same partition: the last written);
- an outcome names its event by `event_id`, else (unknown or missing) by `task_id`;
- only reached calls are labels; an event called twice keeps its latest call (ties: the last read);
- labelled rows are ordered by (called_at, event_key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# What the join needs; any other column is carried into the result.
PREDICTION_KEYS = ("event_key", "task_key")
OUTCOME_KEYS = ("event_key", "task_key", "called_at", "disposition", "subscribed")
PREDICTION_ROW = "prediction_row"  # position among the input predictions
OUTCOME_ROW = "outcome_row"  # position among the input outcomes
OUTCOME_PREFIX = "outcome_"  # an outcome's carried column in a labelled row (e.g. outcome_value)


@dataclass(frozen=True)
class LabelCounts:
    predictions: int = 0  # valid, one per event (the last one written)
    invalid_predictions: int = 0
    outcomes: int = 0  # valid
    invalid_outcomes: int = 0
    not_reached: int = 0  # valid outcomes of calls that did not reach the prospect: no label
    matched: int = 0  # reached outcomes whose prediction was read (re-calls included)
    unmatched: int = 0  # reached outcomes whose prediction was not read


@dataclass(frozen=True)
class LabelColumns:
    """Labelled history as columns: `predictions` one row per event (PREDICTION_KEYS, carried
    columns, PREDICTION_ROW); `labelled` one row per labelled event, the prediction's columns
    and the outcome's `called_at`, `subscribed`, `duration_seconds`, OUTCOME_ROW and carried
    columns (as OUTCOME_PREFIX + name)."""

    predictions: pd.DataFrame
    labelled: pd.DataFrame
    counts: LabelCounts
    errors: list[str] = field(default_factory=list)  # first messages of invalid records

    @property
    def labelled_until(self) -> datetime | None:
        """The newest call among the labelled predictions (event time)."""
        if self.labelled.empty:
            return None
        return pd.Timestamp(self.labelled["called_at"].iloc[-1]).to_pydatetime()

    def of_version(self, version: int) -> pd.DataFrame:
        return self.labelled[self.labelled["model_version"] == version]

    def scores_of(self, version: int) -> np.ndarray:
        """The scores of the version's predictions, one per event."""
        mine = self.predictions["model_version"] == version
        return self.predictions.loc[mine, "score"].to_numpy(dtype=float)

    def summary(self) -> str:
        """What was read, for a command's last line."""
        c = self.counts
        return (
            f"read {c.predictions} predictions ({c.invalid_predictions} invalid skipped), "
            f"{c.outcomes} outcomes ({c.invalid_outcomes} invalid, {c.not_reached} not reached: "
            "skipped), "
            f"{c.matched} matched, {c.unmatched} unmatched"
        )

    def called_after(self, when: datetime | None) -> pd.DataFrame:
        """Labelled rows whose call is newer than `when` (all of them when None)."""
        if when is None:
            return self.labelled
        return self.labelled[self.labelled["called_at"] > pd.Timestamp(when)]


def join_labels(
    predictions: pa.Table,
    outcomes: pa.Table,
    invalid_predictions: int = 0,
    invalid_outcomes: int = 0,
    errors: list[str] | None = None,
) -> LabelColumns:
    """Every reached outcome joined to its event's prediction (the module's rules), on numpy
    arrays of the keys: sorts and binary searches, a few 8-byte arrays per row, no hash table
    of Python objects."""
    # Each event's last prediction: `events` sorted, `event_rows` the prediction row of each.
    p_event = _keys(predictions["event_key"])[0]
    events, event_rows = _last_per_key(p_event)
    # Each task's event (of the kept predictions in read order, the last naming it): `tasks`
    # sorted, `task_events` the event of each as an index of `events`.
    slot = np.full(len(p_event), -1)
    slot[event_rows] = np.arange(len(events))
    read_order = slot[slot >= 0]  # the events by their prediction's row: a scatter, no sort
    tasks, of_task = _last_per_key(_keys(predictions["task_key"])[0][event_rows[read_order]])
    task_events = read_order[of_task]

    reached = np.flatnonzero(column_array(pc.equal(outcomes["disposition"], "reached"), bool))
    o_event, o_has_event = (a[reached] for a in _keys(outcomes["event_key"]))
    known, at_event = _lookup(events, o_event, o_has_event)
    event = np.where(known, at_event, -1)  # each reached call's event, as an index of `events`
    unknown = np.flatnonzero(~known)  # by task id instead (usually none)
    if len(unknown) and len(tasks):
        o_task, o_has_task = (a[reached[unknown]] for a in _keys(outcomes["task_key"]))
        via_task, at_task = _lookup(tasks, o_task, o_has_task)
        event[unknown[via_task]] = task_events[at_task[via_task]]
    matched = event >= 0
    calls, call_event = reached[matched], event[matched]
    called = column_array(outcomes["called_at"], "datetime64[us]").astype(np.int64)[calls]
    # Each event's latest call, the last read among equal times: no sort, two scatters.
    latest = np.full(len(events), np.iinfo(np.int64).min)
    np.maximum.at(latest, call_event, called)
    at_latest = called == latest[call_event]
    last_call = np.full(len(events), -1)
    np.maximum.at(last_call, call_event[at_latest], calls[at_latest])
    labelled_events = np.flatnonzero(last_call >= 0)
    by_time = np.lexsort((events[labelled_events], latest[labelled_events]))
    labelled_events = labelled_events[by_time]  # by (called_at, event_key)
    outcome_rows = last_call[labelled_events]
    prediction_rows = event_rows[labelled_events]
    last = np.sort(event_rows)  # the kept predictions, in read order

    own = set(predictions.column_names)
    extra = [c for c in outcomes.column_names if c not in OUTCOME_KEYS]
    from_outcome = outcomes.select(["called_at", "subscribed", *extra]).take(outcome_rows)
    renamed = ["called_at", "subscribed", *(OUTCOME_PREFIX + c if c in own else c for c in extra)]
    labelled = _frame(predictions.take(prediction_rows).drop_columns(["task_key"]))
    for name, column in zip(renamed, from_outcome.columns, strict=True):
        labelled[name] = _frame(pa.table({name: column}))[name]
    labelled["subscribed"] = labelled["subscribed"].astype(bool)
    labelled[PREDICTION_ROW] = prediction_rows
    labelled[OUTCOME_ROW] = outcome_rows
    kept = _frame(predictions.take(last).drop_columns(["event_key", "task_key"]))
    kept[PREDICTION_ROW] = last
    counts = LabelCounts(
        predictions=len(last),
        invalid_predictions=invalid_predictions,
        outcomes=outcomes.num_rows,
        invalid_outcomes=invalid_outcomes,
        not_reached=outcomes.num_rows - len(reached),
        matched=len(calls),
        unmatched=len(reached) - len(calls),
    )
    return LabelColumns(kept, labelled, counts, list(errors or []))


def column_array(column: pa.ChunkedArray | pa.Array, dtype: Any) -> np.ndarray:
    """An Arrow column as a numpy array of `dtype` (copied when it has chunks or nulls)."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=dtype)


def _keys(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A key column as int64 values (0 where null) and whether each is present."""
    present = column_array(pc.is_valid(column), bool)
    return column_array(pc.fill_null(column, 0), np.int64), present


def _last_per_key(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys, sorted, and the position of each one's last occurrence (an unstable
    sort and the largest position per run: twice as fast as np.unique's stable one)."""
    if len(keys) == 0:
        return keys, np.zeros(0, np.int64)
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return ordered[starts], np.maximum.reduceat(order, starts)


def _lookup(
    sorted_keys: np.ndarray, keys: np.ndarray, wanted: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted key: whether it is among sorted_keys, and where."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), bool), np.zeros(len(keys), np.int64)
    # Searching the keys in their own order walks sorted_keys once (random order: a cache
    # miss a key, 10x slower at millions).
    order = np.argsort(keys)
    at = np.empty(len(keys), np.int64)
    at[order] = np.searchsorted(sorted_keys, keys[order])
    at = np.minimum(at, len(sorted_keys) - 1)
    return wanted & (sorted_keys[at] == keys), at


def _frame(table: pa.Table) -> pd.DataFrame:
    # Int64: the join keys are nullable 64-bit integers (a float would round them).
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
