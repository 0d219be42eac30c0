"""Feature engineering inside the Pipeline, so the pickled artifact carries its transformations.

The first step keeps only the contract's FEATURES (schemas.FEATURES): `duration`, `y` or any
other column in the input frame can never reach the model.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from schemas import CATEGORICAL_FEATURES, CATEGORIES, FEATURES, MONTHS

PdaysMode = Literal["engineer", "drop", "raw"]
PeriodMode = Literal["none", "onehot", "index"]
PERIOD_COLUMN = "period"
CALENDAR_FEATURES: tuple[str, ...] = ("day", "month")
CAMPAIGN_CAP = 10
PREVIOUS_CAP = 10
BALANCE_CLIP = (-5_000, 50_000)


def signed_log(values: pd.Series) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def period_number(periods: pd.Series | np.ndarray) -> np.ndarray:
    """'YYYY-MM' -> months since year 0 (a monotone index for trees)."""
    text = pd.Series(np.asarray(periods, dtype=object)).astype(str)
    return (text.str[:4].astype(int) * 12 + text.str[5:7].astype(int) - 1).to_numpy(float)


class BankFeatures(TransformerMixin, BaseEstimator):
    """Contract columns -> engineered frame: numeric columns float, categoricals `category`
    with the contract's value set (so every fit sees the same categories).

    pdays: "engineer" -> never-contacted flag + log days since contact; "drop"; "raw".
    calendar: keep the planned-contact `day`/`month` (with cyclic month features) or not.
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
        self, pdays: PdaysMode = "engineer", calendar: bool = True, period: PeriodMode = "none"
    ) -> None:
        self.pdays = pdays
        self.calendar = calendar
        self.period = period

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

    def _periods(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's fitted period: its own (nearest earlier fitted), or the latest if absent."""
        if PERIOD_COLUMN not in frame.columns:
            return np.full(len(frame), self.last_period_, dtype=object)
        fitted = np.asarray(self.periods_, dtype=object)
        given = frame[PERIOD_COLUMN].astype(str).to_numpy(dtype=object)
        position = np.searchsorted(fitted, given, side="right") - 1
        return fitted[np.clip(position, 0, len(fitted) - 1)]

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = frame[list(FEATURES)]
        out = pd.DataFrame(index=x.index)
        if self.period == "index":
            out["period_index"] = period_number(self._periods(frame))
        elif self.period == "onehot":
            out["period"] = pd.Categorical(self._periods(frame), categories=self.periods_)
        out["age"] = x["age"].astype(float)
        balance = x["balance"].astype(float).clip(*BALANCE_CLIP)
        out["balance_log"] = signed_log(balance)
        out["campaign_capped"] = x["campaign"].clip(upper=CAMPAIGN_CAP).astype(float)
        out["previous_capped"] = x["previous"].clip(upper=PREVIOUS_CAP).astype(float)
        if self.pdays == "engineer":
            never = x["pdays"] < 0
            out["never_contacted"] = never.astype(float)
            out["log_days_since_contact"] = np.where(never, 0.0, np.log1p(x["pdays"].clip(0)))
        elif self.pdays == "raw":
            out["pdays"] = x["pdays"].astype(float)
        if self.calendar:
            month_number = x["month"].map({m: i for i, m in enumerate(MONTHS)}).astype(float)
            out["day"] = x["day"].astype(float)
            out["month_sin"] = np.sin(2 * np.pi * month_number / 12)
            out["month_cos"] = np.cos(2 * np.pi * month_number / 12)
        for name in CATEGORICAL_FEATURES:
            if name == "month" and not self.calendar:
                continue
            values = list(CATEGORIES[name])
            # Values outside the contract become missing (ignored by the encoders).
            out[name] = pd.Categorical(x[name].where(x[name].isin(values)), categories=values)
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        sample = pd.DataFrame([dict.fromkeys(FEATURES, 0)])
        sample["month"] = "may"
        if self.period != "none":
            sample[PERIOD_COLUMN] = self.periods_[0]
        return np.asarray(self.transform(sample).columns, dtype=object)
