"""The one join of labelled history, on columns: predictions and outcomes as Arrow tables in,
one labelled row per event out (`LabelColumns`: each column taken when it is asked for, pandas
when all are), vectorised so a check over millions of calls stays in seconds and within a few
tens of bytes a call (measured: `bench.tools.scale`).

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

from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
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
    """Labelled history as columns, made when asked for: `labelled_column(name)` one column
    of the labelled rows, `prediction_column(name)` one of the kept predictions (a check takes
    the few it needs, a few bytes a row); `labelled` and `predictions` every column as pandas
    (a training, the report).

    `predictions`: one row per event, its kept prediction (carried columns, PREDICTION_ROW);
    `labelled`: one row per labelled event by (called_at, event_key), the prediction's
    `event_key` and carried columns, then the outcome's `called_at`, `subscribed` and carried
    columns (as OUTCOME_PREFIX + name where a prediction has one of that name), PREDICTION_ROW
    and OUTCOME_ROW."""

    counts: LabelCounts
    errors: list[str]  # first messages of invalid records
    # What the rows point into (the join's, never changed once made):
    stored_predictions: pa.Table  # every valid prediction read: its carried columns
    stored_outcomes: pa.Table  # every reached outcome: called_at, subscribed, carried columns
    outcome_rows: np.ndarray  # each stored outcome's position among the input outcomes
    kept: np.ndarray  # the kept predictions' rows, in read order
    # The labelled rows:
    event_keys: np.ndarray
    prediction_rows: np.ndarray
    stored_outcome_rows: np.ndarray  # into stored_outcomes

    @property
    def labelled_count(self) -> int:
        return len(self.event_keys)

    def labelled_column(self, name: str) -> np.ndarray:
        if name == PREDICTION_ROW:
            return self.prediction_rows
        if name == OUTCOME_ROW:
            return self.outcome_rows[self.stored_outcome_rows]
        return _numpy(self._labelled_arrow(name))

    def prediction_column(self, name: str) -> np.ndarray:
        return _numpy(self.stored_predictions[name].take(self.kept))

    @property
    def labelled_until(self) -> datetime | None:
        """The newest call among the labelled predictions (event time)."""
        if not self.labelled_count:
            return None
        newest = self.stored_outcomes["called_at"][int(self.stored_outcome_rows[-1])]
        return pd.Timestamp(newest.as_py()).to_pydatetime()

    def of_version(self, version: int) -> LabelColumns:
        """The labelled rows and kept predictions of one model version (counts: everything's)."""
        labelled = self.labelled_column("model_version") == version
        kept = self.prediction_column("model_version") == version
        return replace(
            self,
            kept=self.kept[kept],
            event_keys=self.event_keys[labelled],
            prediction_rows=self.prediction_rows[labelled],
            stored_outcome_rows=self.stored_outcome_rows[labelled],
        )

    def count_called_after(self, when: datetime | None) -> int:
        """Labelled rows whose call is newer than `when` (all of them when None)."""
        if when is None:
            return self.labelled_count
        called = self.labelled_column("called_at").astype("datetime64[us]")
        moment = np.datetime64(pd.Timestamp(when).tz_convert("UTC").tz_localize(None), "us")
        return int(np.count_nonzero(called > moment))

    @cached_property
    def labelled(self) -> pd.DataFrame:
        columns = {name: self._labelled_arrow(name) for name in self._labelled_names()}
        labelled = _frame(pa.table(columns))
        labelled["subscribed"] = labelled["subscribed"].astype(bool)
        labelled[PREDICTION_ROW] = self.prediction_rows
        labelled[OUTCOME_ROW] = self.outcome_rows[self.stored_outcome_rows]
        return labelled

    @cached_property
    def predictions(self) -> pd.DataFrame:
        kept = _frame(self.stored_predictions.take(self.kept))
        kept[PREDICTION_ROW] = self.kept
        return kept

    def summary(self) -> str:
        """What was read, for a command's last line."""
        c = self.counts
        return (
            f"read {c.predictions} predictions ({c.invalid_predictions} invalid skipped), "
            f"{c.outcomes} outcomes ({c.invalid_outcomes} invalid, {c.not_reached} not reached: "
            "skipped), "
            f"{c.matched} matched, {c.unmatched} unmatched"
        )

    def _labelled_names(self) -> list[str]:
        own = self.stored_predictions.column_names
        outcome = [OUTCOME_PREFIX + c if c in own else c for c in self.stored_outcomes.column_names]
        return ["event_key", *own, *outcome]

    def _labelled_arrow(self, name: str) -> pa.Array | pa.ChunkedArray:
        if name == "event_key":
            return pa.array(self.event_keys, pa.int64())
        outcomes = self.stored_outcomes.column_names
        if name in self.stored_predictions.column_names:
            return self.stored_predictions[name].take(self.prediction_rows)
        own = name.removeprefix(OUTCOME_PREFIX) if name.startswith(OUTCOME_PREFIX) else name
        if own in outcomes:
            return self.stored_outcomes[own].take(self.stored_outcome_rows)
        raise KeyError(f"no labelled column {name!r}")


def _numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False))


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
    matched by event key (called_at, stored outcome); the task keys of the kept predictions
    sorted, each one's last kept prediction's event (built once a call is to be matched by
    task); the reached calls whose event key names no
    prediction yet, matched by task id when a result is made (usually none). Stored: the
    predictions' carried columns and the reached outcomes' (the keys live in the arrays, a
    call that did not reach anyone is only counted)."""

    def __init__(self) -> None:
        self._predictions: list[pa.Table] = []  # chunks (`_append`)
        self._outcomes: list[pa.Table] = []
        self._schemas: dict[str, pa.Schema] = {}  # of what is stored, by table
        self._p_task = np.zeros(0, np.int64)  # of every prediction row
        self._events = np.zeros(0, np.int64)
        self._kept = np.zeros(0, np.int64)
        self._latest = np.zeros(0, np.int64)  # NO_CALL: none
        self._call = np.zeros(0, np.int64)  # stored outcome; -1: none
        # The task index, built when calls are to be matched by task (None: not built, or
        # stale after a re-prediction named another task): each task's event.
        self._tasks: np.ndarray | None = None
        self._task_event = np.zeros(0, np.int64)
        self._pending = _Calls.empty()
        self._outcome_rows = 0  # input outcomes
        self._stored_rows = np.zeros(0, np.int64)  # each stored outcome's input position
        self._by_event = 0  # reached calls matched by event key

    def extend(
        self, predictions: pa.Table | None = None, outcomes: pa.Table | None = None
    ) -> LabelJoin:
        """Add the next records (valid ones, in read order, after everything added so far)."""
        if predictions is not None:
            self._add_predictions(predictions)
        if outcomes is not None:
            self._add_outcomes(outcomes)
        return self

    def _add_predictions(self, table: pa.Table) -> None:
        stored = table.drop_columns(list(PREDICTION_KEYS))
        self._schemas.setdefault("predictions", stored.schema)
        if not table.num_rows:
            return
        first = len(self._p_task)
        _append(self._predictions, stored)
        event, task = _keys(table["event_key"])[0], _keys(table["task_key"])[0]
        self._p_task = np.concatenate([self._p_task, task])
        keys, rows = _last_per_key(event)
        rows = rows + first
        known, at = lookup(self._events, keys)
        # A later prediction of a known event replaces its kept one.
        replaced = self._kept[at[known]]
        if np.any(self._p_task[replaced] != self._p_task[rows[known]]):
            self._tasks = None
        self._kept[at[known]] = rows[known]
        new_keys = keys[~known]
        where = np.searchsorted(self._events, new_keys)
        self._events = np.insert(self._events, where, new_keys)
        self._kept = np.insert(self._kept, where, rows[~known])
        self._latest = np.insert(self._latest, where, NO_CALL)
        self._call = np.insert(self._call, where, -1)
        if self._tasks is not None:
            self._name_tasks(rows, keys)
        if len(new_keys) and len(self._pending.rows):
            # Calls read before their event's prediction: matched by event key from now on.
            now_known = lookup(new_keys, self._pending.event, self._pending.has_event)[0]
            if now_known.any():
                self._match(self._pending.take(now_known))
                self._pending = self._pending.take(~now_known)

    def _name_tasks(self, rows: np.ndarray, events: np.ndarray) -> None:
        """The tasks of newly kept predictions (`rows`, of `events`; later than every kept one)
        now name their events."""
        assert self._tasks is not None
        order = np.argsort(rows)
        tasks, last = _last_per_key(self._p_task[rows[order]])
        named = events[order][last]
        known, at = lookup(self._tasks, tasks)
        self._task_event[at[known]] = named[known]
        where = np.searchsorted(self._tasks, tasks[~known])
        self._tasks = np.insert(self._tasks, where, tasks[~known])
        self._task_event = np.insert(self._task_event, where, named[~known])

    def _task_index(self) -> np.ndarray:
        if self._tasks is None:
            order = np.argsort(self._kept)  # the kept predictions in read order
            self._tasks, last = _last_per_key(self._p_task[self._kept[order]])
            self._task_event = self._events[order][last]
        return self._tasks

    def _add_outcomes(self, table: pa.Table) -> None:
        carried = [c for c in table.column_names if c not in OUTCOME_KEYS]
        stored = table.select(["called_at", "subscribed", *carried])
        self._schemas.setdefault("outcomes", stored.schema)
        if not table.num_rows:
            return
        reached = np.flatnonzero(column_array(pc.equal(table["disposition"], "reached"), bool))
        first = len(self._stored_rows)
        _append(self._outcomes, stored.take(reached))
        self._stored_rows = np.concatenate([self._stored_rows, reached + self._outcome_rows])
        self._outcome_rows += table.num_rows
        event, has_event = (a[reached] for a in _keys(table["event_key"]))
        task, has_task = (a[reached] for a in _keys(table["task_key"]))
        called = column_array(table["called_at"], "datetime64[us]").astype(np.int64)[reached]
        stored_at = np.arange(first, first + len(reached))
        calls = _Calls(stored_at, event, has_event, task, has_task, called)
        known = lookup(self._events, event, has_event)[0]
        self._match(calls.take(known))
        self._pending = self._pending.plus(calls.take(~known))

    def _match(self, calls: _Calls) -> None:
        """Calls whose event key names a prediction: each event keeps its latest."""
        at = lookup(self._events, calls.event, calls.has_event)[1]
        _keep_latest(self._latest, self._call, at, calls.called, calls.rows)
        self._by_event += len(calls.rows)

    def result(
        self,
        invalid_predictions: int = 0,
        invalid_outcomes: int = 0,
        errors: list[str] | None = None,
    ) -> LabelColumns:
        """The labelled history of everything extended (the module's rules)."""
        assert len(self._schemas) == 2, "extend with both tables first"
        latest, call, by_task = self._latest, self._call, 0
        pending = self._pending
        if len(pending.rows) and len(self._kept):
            named, at_task = lookup(self._task_index(), pending.task, pending.has_task)
            if named.any():
                event = self._task_event[at_task[named]]
                at = lookup(self._events, event)[1]
                latest, call, by_task = latest.copy(), call.copy(), int(named.sum())
                _keep_latest(latest, call, at, pending.called[named], pending.rows[named])
        labelled = np.flatnonzero(call >= 0)
        labelled = labelled[np.lexsort((self._events[labelled], latest[labelled]))]
        matched = self._by_event + by_task
        reached = len(self._stored_rows)
        counts = LabelCounts(
            predictions=len(self._kept),
            invalid_predictions=invalid_predictions,
            outcomes=self._outcome_rows,
            invalid_outcomes=invalid_outcomes,
            not_reached=self._outcome_rows - reached,
            matched=matched,
            unmatched=reached - matched,
        )
        return LabelColumns(
            counts,
            list(errors or []),
            stored_predictions=_stacked(self._predictions, self._schemas["predictions"]),
            stored_outcomes=_stacked(self._outcomes, self._schemas["outcomes"]),
            outcome_rows=self._stored_rows,
            kept=_positions(np.sort(self._kept), len(self._p_task)),  # in read order
            event_keys=self._events[labelled],  # by (called_at, event_key)
            prediction_rows=_positions(self._kept[labelled], len(self._p_task)),
            stored_outcome_rows=_positions(call[labelled], len(self._stored_rows)),
        )


def _positions(rows: np.ndarray, bound: int) -> np.ndarray:
    """Positions below `bound` in 4 bytes each where they fit: a result's index arrays are
    half its size."""
    return rows.astype(np.int32) if bound < np.iinfo(np.int32).max else rows


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
    """Chunks merged like a binary counter: a chunk is merged into the one before while that
    one is no larger, so a history's days and months of checks' few records each leave a
    logarithmic number of chunks to take from, each row copied a logarithmic number of times."""
    chunks.append(table)
    while len(chunks) > 1 and chunks[-2].num_rows <= chunks[-1].num_rows:
        chunks[-2:] = [pa.concat_tables(chunks[-2:]).combine_chunks()]


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


def lookup(
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
