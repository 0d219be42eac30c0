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
    """Every reached outcome joined to its event's prediction (the module's rules), at once."""
    joined = LabelJoin().extend(predictions, outcomes)
    return joined.result(invalid_predictions, invalid_outcomes, errors)


@dataclass(frozen=True)
class _Calls:
    """Reached calls not (yet) matched by their event key: they may name it by task id."""

    rows: np.ndarray  # outcome rows
    event: np.ndarray
    has_event: np.ndarray
    task: np.ndarray
    has_task: np.ndarray
    called: np.ndarray  # called_at, µs

    @classmethod
    def empty(cls) -> _Calls:
        return cls(*(np.zeros(0, t) for t in (np.int64, np.int64, bool, np.int64, bool, np.int64)))

    def take(self, which: np.ndarray) -> _Calls:
        return _Calls(*(a[which] for a in self._arrays()))

    def plus(self, other: _Calls) -> _Calls:
        return _Calls(
            *(np.concatenate(pair) for pair in zip(self._arrays(), other._arrays(), strict=True))
        )

    def _arrays(self) -> tuple[np.ndarray, ...]:
        return (self.rows, self.event, self.has_event, self.task, self.has_task, self.called)


class LabelJoin:
    """The join kept up to date as records arrive (a scheduler's state between checks):
    `extend` with the next predictions and outcomes in read order, `result()` the labelled
    history so far, the same as `join_labels` of everything extended. An extension costs its
    own records' sorts plus a few copies of the per-event arrays, never a sort of the history.

    State, on numpy arrays of the keys (a few 8-byte arrays per event, no Python objects):
    the distinct events sorted, each one's kept (last) prediction row, and its latest call
    matched by event key (called_at, outcome row); the task keys of the kept predictions
    sorted, each one's last kept prediction; the reached calls whose event key names no
    prediction yet, matched by task id when a result is made (usually none)."""

    def __init__(self) -> None:
        self._predictions: list[pa.Table] = []  # [first extension, the later ones combined]
        self._outcomes: list[pa.Table] = []
        self._schemas: tuple[pa.Schema, pa.Schema] | None = None
        self._p_event = np.zeros(0, np.int64)  # of every prediction row
        self._p_task = np.zeros(0, np.int64)
        self._events = np.zeros(0, np.int64)
        self._kept = np.zeros(0, np.int64)
        self._latest = np.zeros(0, np.int64)  # NO_CALL: none
        self._call = np.zeros(0, np.int64)  # -1: none
        self._tasks = np.zeros(0, np.int64)
        self._task_row = np.zeros(0, np.int64)
        # A re-prediction naming another task: the task index is rebuilt before it is used.
        self._tasks_stale = False
        self._pending = _Calls.empty()
        self._outcome_rows = 0
        self._reached = 0
        self._by_event = 0  # reached calls matched by event key

    def extend(self, predictions: pa.Table, outcomes: pa.Table) -> LabelJoin:
        """Add the next records (valid ones, in read order, after everything added so far)."""
        if self._schemas is None:
            self._schemas = (predictions.schema, outcomes.schema)
        if predictions.num_rows:
            self._add_predictions(predictions)
        if outcomes.num_rows:
            self._add_outcomes(outcomes)
        return self

    def _add_predictions(self, table: pa.Table) -> None:
        first = len(self._p_event)
        _append(self._predictions, table)
        event, task = _keys(table["event_key"])[0], _keys(table["task_key"])[0]
        self._p_event = np.concatenate([self._p_event, event])
        self._p_task = np.concatenate([self._p_task, task])
        keys, rows = _last_per_key(event)
        rows = rows + first
        known, at = _lookup(self._events, keys)
        # A later prediction of a known event replaces its kept one.
        replaced = self._kept[at[known]]
        if np.any(self._p_task[replaced] != self._p_task[rows[known]]):
            self._tasks_stale = True
        self._kept[at[known]] = rows[known]
        new_keys = keys[~known]
        where = np.searchsorted(self._events, new_keys)
        self._events = np.insert(self._events, where, new_keys)
        self._kept = np.insert(self._kept, where, rows[~known])
        self._latest = np.insert(self._latest, where, NO_CALL)
        self._call = np.insert(self._call, where, -1)
        if not self._tasks_stale:
            self._name_tasks(rows)
        if len(new_keys) and len(self._pending.rows):
            # Calls read before their event's prediction: matched by event key from now on.
            now_known = _lookup(new_keys, self._pending.event, self._pending.has_event)[0]
            if now_known.any():
                self._match(self._pending.take(now_known))
                self._pending = self._pending.take(~now_known)

    def _name_tasks(self, rows: np.ndarray) -> None:
        """The tasks of newly kept predictions (later than every kept one) now name them."""
        rows = np.sort(rows)
        tasks, last = _last_per_key(self._p_task[rows])
        known, at = _lookup(self._tasks, tasks)
        self._task_row[at[known]] = rows[last[known]]
        where = np.searchsorted(self._tasks, tasks[~known])
        self._tasks = np.insert(self._tasks, where, tasks[~known])
        self._task_row = np.insert(self._task_row, where, rows[last[~known]])

    def _rebuild_tasks(self) -> None:
        kept = np.sort(self._kept)  # in read order
        self._tasks, last = _last_per_key(self._p_task[kept])
        self._task_row = kept[last]
        self._tasks_stale = False

    def _add_outcomes(self, table: pa.Table) -> None:
        first = self._outcome_rows
        _append(self._outcomes, table)
        self._outcome_rows += table.num_rows
        reached = np.flatnonzero(column_array(pc.equal(table["disposition"], "reached"), bool))
        self._reached += len(reached)
        event, has_event = (a[reached] for a in _keys(table["event_key"]))
        task, has_task = (a[reached] for a in _keys(table["task_key"]))
        called = column_array(table["called_at"], "datetime64[us]").astype(np.int64)[reached]
        calls = _Calls(reached + first, event, has_event, task, has_task, called)
        known = _lookup(self._events, event, has_event)[0]
        self._match(calls.take(known))
        self._pending = self._pending.plus(calls.take(~known))

    def _match(self, calls: _Calls) -> None:
        """Calls whose event key names a prediction: each event keeps its latest."""
        at = _lookup(self._events, calls.event, calls.has_event)[1]
        _keep_latest(self._latest, self._call, at, calls.called, calls.rows)
        self._by_event += len(calls.rows)

    def result(
        self,
        invalid_predictions: int = 0,
        invalid_outcomes: int = 0,
        errors: list[str] | None = None,
    ) -> LabelColumns:
        """The labelled history of everything extended (the module's rules)."""
        assert self._schemas is not None, "extend first"
        if self._tasks_stale:
            self._rebuild_tasks()
        latest, call, by_task = self._latest, self._call, 0
        pending = self._pending
        if len(pending.rows) and len(self._tasks):
            named, at_task = _lookup(self._tasks, pending.task, pending.has_task)
            if named.any():
                event = self._p_event[self._task_row[at_task[named]]]
                at = _lookup(self._events, event)[1]
                latest, call, by_task = latest.copy(), call.copy(), int(named.sum())
                _keep_latest(latest, call, at, pending.called[named], pending.rows[named])
        labelled_events = np.flatnonzero(call >= 0)
        by_time = np.lexsort((self._events[labelled_events], latest[labelled_events]))
        labelled_events = labelled_events[by_time]  # by (called_at, event_key)
        outcome_rows = call[labelled_events]
        prediction_rows = self._kept[labelled_events]
        last = np.sort(self._kept)  # the kept predictions, in read order
        predictions = _stacked(self._predictions, self._schemas[0])
        outcomes = _stacked(self._outcomes, self._schemas[1])

        own = set(predictions.column_names)
        extra = [c for c in outcomes.column_names if c not in OUTCOME_KEYS]
        from_outcome = outcomes.select(["called_at", "subscribed", *extra]).take(outcome_rows)
        renamed = [
            "called_at",
            "subscribed",
            *(OUTCOME_PREFIX + c if c in own else c for c in extra),
        ]
        labelled = _frame(predictions.take(prediction_rows).drop_columns(["task_key"]))
        for name, column in zip(renamed, from_outcome.columns, strict=True):
            labelled[name] = _frame(pa.table({name: column}))[name]
        labelled["subscribed"] = labelled["subscribed"].astype(bool)
        labelled[PREDICTION_ROW] = prediction_rows
        labelled[OUTCOME_ROW] = outcome_rows
        kept = _frame(predictions.take(last).drop_columns(["event_key", "task_key"]))
        kept[PREDICTION_ROW] = last
        matched = self._by_event + by_task
        counts = LabelCounts(
            predictions=len(last),
            invalid_predictions=invalid_predictions,
            outcomes=self._outcome_rows,
            invalid_outcomes=invalid_outcomes,
            not_reached=self._outcome_rows - self._reached,
            matched=matched,
            unmatched=self._reached - matched,
        )
        return LabelColumns(kept, labelled, counts, list(errors or []))


NO_CALL = np.iinfo(np.int64).min


def _keep_latest(
    latest: np.ndarray, call: np.ndarray, at: np.ndarray, called: np.ndarray, rows: np.ndarray
) -> None:
    """Each event (`at`) keeps its latest call, the last read among equal times."""
    if not len(at):
        return
    order = np.lexsort((rows, called, at))
    at, called, rows = at[order], called[order], rows[order]
    best = np.r_[at[1:] != at[:-1], True]  # the last of each event's run
    at, called, rows = at[best], called[best], rows[best]
    later = (called > latest[at]) | ((called == latest[at]) & (rows > call[at]))
    latest[at[later]] = called[later]
    call[at[later]] = rows[later]


def _append(chunks: list[pa.Table], table: pa.Table) -> None:
    """The first extension (a history's bulk) as it is; the later ones (a check's few records
    each) combined into one, so months of checks do not leave thousands of chunks to take
    from."""
    if len(chunks) < 2:
        chunks.append(table)
    else:
        chunks[1] = pa.concat_tables([chunks[1], table]).combine_chunks()


def _stacked(chunks: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(chunks) if chunks else schema.empty_table()


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
    sorted_keys: np.ndarray, keys: np.ndarray, wanted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each wanted key (all when None): whether it is among sorted_keys, and where."""
    if wanted is None:
        wanted = np.ones(len(keys), bool)
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
