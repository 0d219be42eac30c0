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
from datetime import datetime

import numpy as np
import pandas as pd

from feedback.label_columns import LabelColumns
from schemas import CATEGORIES, FEATURE_COLUMN_PREFIX, FEATURES
from trainer.data import COLUMNS, cut_base

log = logging.getLogger(__name__)

ROW_COLUMNS: tuple[str, ...] = (*COLUMNS, "year", "period")


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
    window_months: int | None = None  # trailing periods kept (None: all of them)
    rows_before_window: int = 0  # older rows left out by the window

    @property
    def outcome_rows(self) -> int:
        return self.labels.labelled_count if self.labels is not None else 0

    @property
    def labelled_until(self) -> datetime | None:
        return self.labels.labelled_until if self.labels is not None else None


def trailing_periods(frame: pd.DataFrame, months: int | None) -> pd.DataFrame:
    """The rows of the frame's last `months` contact periods (all of them when None)."""
    if months is None:
        return frame
    kept = list(dict.fromkeys(frame["period"]))[-months:]
    return frame.loc[frame["period"].isin(kept)].reset_index(drop=True)


def training_data(
    bank: pd.DataFrame,
    labels: LabelColumns | None,
    base_data_until: str | None,
    window_months: int | None = None,
) -> TrainingData:
    """The base data cut at `base_data_until`, then the labelled outcomes (if any were read,
    with their features: `read_label_columns(..., features=True)`), then only the trailing
    `window_months` periods (Settings.training_window_months)."""
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
    combined = with_outcomes(base, rows)
    frame = trailing_periods(combined, window_months)
    return TrainingData(
        frame=frame,
        base_rows=len(base),
        base_data_until=base_data_until,
        base_periods=[str(p) for p in dict.fromkeys(base["period"])],
        labels=labels,
        outcome_periods=outcome_periods,
        overlapping_periods=overlap,
        window_months=window_months,
        rows_before_window=len(combined) - len(frame),
    )
