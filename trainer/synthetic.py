"""Synthetic rows with bank-full.csv's schema, value sets and a planted signal.

For tests on machines that have neither ../shared/data nor network. Never report model quality
from it: the signal is invented.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from schemas import CATEGORIES, MONTHS

# Contacts per period in UCI's order of months; the base rate rises over time as in the real data.
_PERIODS: list[tuple[int, str]] = [(2008, m) for m in MONTHS[4:]] + [
    (year, m) for year in (2009, 2010) for m in MONTHS
][:-1]


def synthetic_bank_frame(rows: int = 4000, seed: int = 7) -> pd.DataFrame:
    """A frame with bank-full.csv's 17 columns (duration and y included), chronological."""
    rng = np.random.default_rng(seed)
    period_index = np.sort(rng.integers(0, len(_PERIODS), size=rows))
    month = np.array([_PERIODS[i][1] for i in period_index])

    def pick(name: str, weights: list[float] | None = None) -> np.ndarray:
        values = CATEGORIES[name]
        p = None if weights is None else np.asarray(weights) / np.sum(weights)
        return rng.choice(np.array(values, dtype=object), size=rows, p=p)

    never_contacted = rng.random(rows) < 0.8
    pdays = np.where(never_contacted, -1, rng.integers(1, 400, size=rows))
    previous = np.where(never_contacted, 0, rng.integers(1, 8, size=rows))
    poutcome = np.where(
        never_contacted,
        "unknown",
        rng.choice(np.array(["failure", "other", "success"], dtype=object), size=rows),
    )
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 96, size=rows),
            "job": pick("job"),
            "marital": pick("marital", [6, 1, 3]),
            "education": pick("education", [1, 5, 2, 3]),
            "default": pick("default", [1, 50]),
            "balance": np.round(rng.lognormal(6.5, 1.5, size=rows) - 300).astype(int),
            "housing": pick("housing"),
            "loan": pick("loan", [1, 5]),
            "contact": pick("contact", [3, 1, 6]),
            "day": rng.integers(1, 32, size=rows),
            "month": month,
            "duration": rng.integers(0, 1200, size=rows),
            "campaign": np.minimum(rng.geometric(0.4, size=rows), 63),
            "pdays": pdays,
            "previous": previous,
            "poutcome": poutcome,
        }
    )
    logit = (
        -2.6
        + 2.2 * (frame["poutcome"] == "success")
        + 0.6 * (frame["contact"] == "cellular")
        - 0.7 * (frame["housing"] == "yes")
        + 0.8 * ((frame["age"] > 60) | (frame["age"] < 25))
        - 0.15 * (frame["campaign"] - 1)
        + 0.2 * np.log1p(frame["balance"].clip(lower=0)) / 3
        + 1.5 * period_index / len(_PERIODS)
    )
    subscribed = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    # Calls that end in a subscription last longer: duration would leak the label.
    frame["duration"] = np.where(subscribed, frame["duration"] + 300, frame["duration"])
    frame["y"] = np.where(subscribed, "yes", "no")
    return frame
