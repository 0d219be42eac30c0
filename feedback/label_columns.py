"""The one join of labelled history, on columns: predictions and outcomes as frames in, one
labelled row per event out, vectorised so a check over millions of calls stays in seconds.

Inputs are the valid records in read order, one column per contract field (the lake's column
names: `model_version`, `score`, `occurred_at` for a prediction; `called_at`, `disposition`,
`subscribed`, `duration_seconds` for an outcome) and the ids as `event_key` and `task_key`
(`schemas.join_key`, nullable Int64: 8 bytes a row where an id string costs ~40), plus any
columns a caller wants carried through (the features, the raw value).

The rules, the same for the trainer, the scheduler and the report:
- an event predicted twice keeps its last prediction (same key, same partition: the last written);
- an outcome names its event by `event_id`, else (unknown or missing) by `task_id`;
- only reached calls are labels; an event called twice keeps its latest call (ties: the last read);
- labelled rows are ordered by (called_at, event_key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

PREDICTION_KEYS = ("event_key", "task_key", "model_version", "score", "occurred_at")
OUTCOME_KEYS = (
    "event_key",
    "task_key",
    "called_at",
    "disposition",
    "subscribed",
    "duration_seconds",
)
KEY_DTYPE = "Int64"  # nullable: an outcome may name its event by task id only
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
    predictions: pd.DataFrame,
    outcomes: pd.DataFrame,
    invalid_predictions: int = 0,
    invalid_outcomes: int = 0,
    errors: list[str] | None = None,
) -> LabelColumns:
    """Every reached outcome joined to its event's prediction (the module's rules)."""
    predictions = predictions.reset_index(drop=True)
    predictions[PREDICTION_ROW] = np.arange(len(predictions))
    last = predictions.drop_duplicates("event_key", keep="last")
    outcomes = outcomes.reset_index(drop=True)
    outcomes[OUTCOME_ROW] = np.arange(len(outcomes))
    reached = outcomes[outcomes["disposition"] == "reached"]
    known = reached["event_key"].isin(last["event_key"])
    event_of_task = last.drop_duplicates("task_key", keep="last").set_index("task_key")
    by_task = reached["task_key"].map(event_of_task["event_key"]).astype(KEY_DTYPE)
    event = reached["event_key"].where(known, by_task)
    carried = [c for c in reached.columns if c not in OUTCOME_KEYS and c != OUTCOME_ROW]
    calls = pd.DataFrame(
        {
            "event_key": event,
            "called_at": reached["called_at"],
            "subscribed": reached["subscribed"],
            "duration_seconds": reached["duration_seconds"],
            OUTCOME_ROW: reached[OUTCOME_ROW],
            **{OUTCOME_PREFIX + c: reached[c] for c in carried},
        }
    ).dropna(subset=["event_key"])
    latest = calls.sort_values("called_at", kind="stable").drop_duplicates("event_key", keep="last")
    labelled = latest.merge(last, on="event_key", how="inner")  # both unique by event
    labelled = labelled.sort_values(["called_at", "event_key"], kind="stable", ignore_index=True)
    labelled["subscribed"] = labelled["subscribed"].astype(bool)
    counts = LabelCounts(
        predictions=len(last),
        invalid_predictions=invalid_predictions,
        outcomes=len(outcomes),
        invalid_outcomes=invalid_outcomes,
        not_reached=len(outcomes) - len(reached),
        matched=len(calls),
        unmatched=len(reached) - len(calls),
    )
    return LabelColumns(last.reset_index(drop=True), labelled, counts, list(errors or []))
