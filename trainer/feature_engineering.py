"""Feature engineering inside the Pipeline, so the pickled artifact carries its transformations.

The first step keeps only the contract's FEATURES (schemas.FEATURES): `duration`, `y` or any
other column in the input frame can never reach the model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from registry.pipeline_steps import FeatureArrays
from schemas import CATEGORICAL_FEATURES, CATEGORIES, FEATURES, MONTHS

PdaysMode = Literal["engineer", "drop", "raw"]
PeriodMode = Literal["none", "onehot", "index"]
PERIOD_COLUMN = "period"
CALENDAR_FEATURES: tuple[str, ...] = ("day", "month")
CAMPAIGN_CAP = 10
PREVIOUS_CAP = 10
BALANCE_CLIP = (-5_000, 50_000)
MONTH_NUMBERS: dict[str, float] = {m: float(i) for i, m in enumerate(MONTHS)}
# Days since the previous campaign's contact, in the buckets a CRM would report (upper bounds).
PDAYS_BUCKETS: tuple[tuple[str, float], ...] = (
    ("3 months", 92.0),
    ("6 months", 183.0),
    ("1 year", 366.0),
    ("more", np.inf),
)
PDAYS_NEVER = "never"
PDAYS_BUCKET_NAMES: list[str] = [PDAYS_NEVER, *(name for name, _ in PDAYS_BUCKETS)]


@cache
def _category_positions(name: str) -> dict[Any, int]:
    return {value: i for i, value in enumerate(CATEGORIES[name])}


def signed_log(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def period_number(periods: pd.Series | np.ndarray) -> np.ndarray:
    """'YYYY-MM' -> months since year 0 (a monotone index for trees)."""
    return np.array([int(p[:4]) * 12 + int(p[5:7]) - 1 for p in map(str, periods)], dtype=float)


def _codes(values: Iterable[Any], positions: dict[Any, int]) -> np.ndarray:
    """Each value's position in its category list, -1 (missing) for a value outside it."""
    return np.fromiter((positions.get(v, -1) for v in values), dtype=np.int16)


class BankFeatures(TransformerMixin, BaseEstimator):
    """Contract columns -> engineered frame: numeric columns float, categoricals `category`
    with the contract's value set (so every fit sees the same categories).

    pdays: "engineer" -> never-contacted flag + log days since contact; "drop"; "raw".
    calendar: keep the planned-contact `day`/`month` (with cyclic month features) or not.
    interactions: add what a CRM knows before the call, combined: the days since the previous
      contact in buckets (`pdays_bucket`, "never" for pdays = -1), the previous campaign's contacts
      split by its outcome (`previous_success`, `previous_failure`: capped previous where the
      outcome was that, else 0) and the number of loans (`loans`: housing + personal).
    period: contact-period fixed effects, so the other effects are within-period effects:
      "onehot" -> a categorical `period` (one coefficient per contact month),
      "index" -> a numeric months-since-start `period_index` (trees split it into eras),
      "none" -> no period input.
      Fit reads the frame's `period` column ('YYYY-MM'; the time context, never a model input
      otherwise). Transform uses that column when the frame has it (training, and out-of-fold
      calibration), an unseen period mapped to the nearest earlier fitted one; without it (serving:
      only the contract's FEATURES arrive) every row gets the latest period seen in fit.
    """

    def __init__(
        self,
        pdays: PdaysMode = "engineer",
        calendar: bool = True,
        period: PeriodMode = "none",
        interactions: bool = False,
    ) -> None:
        self.pdays = pdays
        self.calendar = calendar
        self.period = period
        self.interactions = interactions

    def fit(self, frame: pd.DataFrame, y: object = None) -> BankFeatures:
        missing = [c for c in FEATURES if c not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature column(s): {', '.join(missing)}")
        self.n_features_in_ = len(FEATURES)
        if self.period != "none":
            if PERIOD_COLUMN not in frame.columns:
                raise ValueError(f"period={self.period!r} needs a '{PERIOD_COLUMN}' column to fit")
            self.periods_ = sorted({str(p) for p in frame[PERIOD_COLUMN]})
            self.last_period_ = self.periods_[-1]
        return self

    def _period_positions(self, frame: Mapping[str, Any], rows: int) -> np.ndarray:
        """Each row's fitted period, as a position in periods_: its own (the nearest earlier
        fitted one), or the latest when the frame has no period column (serving)."""
        if PERIOD_COLUMN not in frame:
            return np.full(rows, len(self.periods_) - 1, dtype=np.int16)
        given = np.array([str(p) for p in frame[PERIOD_COLUMN]], dtype=object)
        fitted = np.asarray(self.periods_, dtype=object)
        position = np.searchsorted(fitted, given, side="right") - 1
        return np.clip(position, 0, len(fitted) - 1).astype(np.int16)

    def arrays(self, frame: Mapping[str, Any]) -> FeatureArrays:
        """The features of `frame` (a DataFrame, or a mapping of column name -> values holding
        the contract's FEATURES) as numpy arrays: one vectorised pass per column, no pandas.
        `transform` is this, as a DataFrame."""
        rows = len(frame[FEATURES[0]])
        numeric: dict[str, np.ndarray] = {}
        categorical: dict[str, tuple[np.ndarray, list[str]]] = {}
        if self.period == "index":
            numbers = period_number(self.periods_)
            numeric["period_index"] = numbers[self._period_positions(frame, rows)]
        elif self.period == "onehot":
            categorical["period"] = (self._period_positions(frame, rows), list(self.periods_))

        def column(name: str) -> np.ndarray:
            return np.asarray(frame[name], dtype=float)

        numeric["age"] = column("age")
        numeric["balance_log"] = signed_log(np.clip(column("balance"), *BALANCE_CLIP))
        numeric["campaign_capped"] = np.minimum(column("campaign"), CAMPAIGN_CAP)
        numeric["previous_capped"] = np.minimum(column("previous"), PREVIOUS_CAP)
        if self.pdays == "engineer":
            pdays = column("pdays")
            never = pdays < 0
            numeric["never_contacted"] = never.astype(float)
            numeric["log_days_since_contact"] = np.where(
                never, 0.0, np.log1p(np.maximum(pdays, 0.0))
            )
        elif self.pdays == "raw":
            numeric["pdays"] = column("pdays")
        if self.calendar:
            month_number = np.fromiter(
                (MONTH_NUMBERS.get(m, np.nan) for m in frame["month"]), dtype=float, count=rows
            )
            numeric["day"] = column("day")
            numeric["month_sin"] = np.sin(2 * np.pi * month_number / 12)
            numeric["month_cos"] = np.cos(2 * np.pi * month_number / 12)
        if self.interactions:
            self._add_interactions(frame, numeric, categorical)
        for name in CATEGORICAL_FEATURES:
            if name == "month" and not self.calendar:
                continue
            # Values outside the contract become missing (ignored by the encoders).
            codes = _codes(frame[name], _category_positions(name))
            categorical[name] = (codes, list(CATEGORIES[name]))
        return FeatureArrays(numeric, categorical, rows)

    @staticmethod
    def _add_interactions(
        frame: Mapping[str, Any],
        numeric: dict[str, np.ndarray],
        categorical: dict[str, tuple[np.ndarray, list[str]]],
    ) -> None:
        pdays = np.asarray(frame["pdays"], dtype=float)
        bounds = np.array([bound for _, bound in PDAYS_BUCKETS])
        # 0 = never contacted, then the first bucket whose upper bound holds the days.
        bucket = np.where(pdays < 0, 0, 1 + np.searchsorted(bounds, pdays, side="left"))
        categorical["pdays_bucket"] = (bucket.astype(np.int16), PDAYS_BUCKET_NAMES)
        previous = np.minimum(np.asarray(frame["previous"], dtype=float), PREVIOUS_CAP)
        outcome = np.asarray(frame["poutcome"], dtype=object)
        numeric["previous_success"] = np.where(outcome == "success", previous, 0.0)
        numeric["previous_failure"] = np.where(outcome == "failure", previous, 0.0)
        loans = (np.asarray(frame["housing"], dtype=object) == "yes").astype(float)
        numeric["loans"] = loans + (np.asarray(frame["loan"], dtype=object) == "yes")

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        features = self.arrays(frame)
        columns: dict[str, Any] = {}
        if "period" in features.categorical:  # the period comes first, as it always did
            codes, categories = features.categorical["period"]
            columns["period"] = pd.Categorical.from_codes(codes, categories=categories)
        columns.update(features.numeric)
        for name, (codes, categories) in features.categorical.items():
            if name != "period":
                columns[name] = pd.Categorical.from_codes(codes, categories=categories)
        index = frame.index if isinstance(frame, pd.DataFrame) else None
        return pd.DataFrame(columns, index=index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        sample = pd.DataFrame([dict.fromkeys(FEATURES, 0)])
        sample["month"] = "may"
        if self.period != "none":
            sample[PERIOD_COLUMN] = self.periods_[0]
        return np.asarray(self.transform(sample).columns, dtype=object)
