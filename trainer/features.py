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
CALENDAR_FEATURES: tuple[str, ...] = ("day", "month")
CAMPAIGN_CAP = 10
PREVIOUS_CAP = 10
BALANCE_CLIP = (-5_000, 50_000)


def signed_log(values: pd.Series) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


class BankFeatures(TransformerMixin, BaseEstimator):
    """Contract columns -> engineered frame: numeric columns float, categoricals `category`
    with the contract's value set (so every fit sees the same categories).

    pdays: "engineer" -> never-contacted flag + log days since contact; "drop"; "raw".
    calendar: keep the planned-contact `day`/`month` (with cyclic month features) or not.
    """

    def __init__(self, pdays: PdaysMode = "engineer", calendar: bool = True) -> None:
        self.pdays = pdays
        self.calendar = calendar

    def fit(self, frame: pd.DataFrame, y: object = None) -> BankFeatures:
        missing = [c for c in FEATURES if c not in frame.columns]
        if missing:
            raise ValueError(f"input lacks feature column(s): {', '.join(missing)}")
        self.n_features_in_ = len(FEATURES)
        return self

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = frame[list(FEATURES)]
        out = pd.DataFrame(index=x.index)
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
        return np.asarray(self.transform(sample).columns, dtype=object)
