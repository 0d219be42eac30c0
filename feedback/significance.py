"""Is a difference more than noise? The two questions the loop decides on.

- `paired_auc_difference`: candidate minus champion ROC-AUC on the same rows, with a paired
  bootstrap interval (the gate publishes unless the whole interval is below zero). On the
  200-2,000 rows of a newest window the AUC's standard error is 0.01-0.04, so a fixed
  tolerance of 0.005 refused retrains on chance.
- `calibration_gap`: the served scores' expected conversions against the observed ones on a
  fresh window, with the z statistic of their difference (a recalibration fires only when it
  is significant: fitting month-to-month noise made the served mean worse, not better).
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict

from feedback.quality import roc_auc

BOOTSTRAP_SEED = 0  # a gate decides the same way on the same rows


class AucDifference(BaseModel):
    """Candidate minus champion ROC-AUC on the same rows, with its bootstrap interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float
    low: float
    high: float
    confidence: float
    rows: int
    resamples: int  # the draws with both classes (those without are left out)

    @property
    def worse_beyond_interval(self) -> bool:
        return self.high < 0

    def text(self) -> str:
        return (
            f"difference {self.value:+.4f}, {self.confidence:.0%} interval "
            f"[{self.low:+.4f}, {self.high:+.4f}] (paired bootstrap, {self.resamples} draws of "
            f"{self.rows} rows)"
        )


def paired_auc_difference(
    y: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    resamples: int,
    confidence: float,
    seed: int = BOOTSTRAP_SEED,
) -> AucDifference | None:
    """The paired bootstrap of AUC(candidate) - AUC(champion): `resamples` draws of the rows
    with replacement (one `numpy.random.default_rng(seed).integers(0, n, n)` each), both models
    scored on each draw, and the percentile interval of the differences at `confidence`. None
    when the rows do not hold both classes."""
    y = np.asarray(y, dtype=bool)
    candidate, champion = np.asarray(candidate, float), np.asarray(champion, float)
    whole = (roc_auc(y, candidate), roc_auc(y, champion))
    if whole[0] is None or whole[1] is None:
        return None
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        a, b = roc_auc(y[rows], candidate[rows]), roc_auc(y[rows], champion[rows])
        if a is not None and b is not None:
            differences.append(a - b)
    if not differences:
        return None
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return AucDifference(
        value=whole[0] - whole[1],
        low=float(low),
        high=float(high),
        confidence=confidence,
        rows=len(y),
        resamples=len(differences),
    )


class CalibrationGap(BaseModel):
    """Observed against expected conversions of served scores on a window of outcomes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rows: int
    expected: float  # sum of the served scores
    observed: int  # conversions
    z: float  # (observed - expected) / sqrt(sum p(1-p)): ~N(0, 1) when the scores are calibrated

    @property
    def gap(self) -> float:
        """Observed rate minus mean served score."""
        return (self.observed - self.expected) / self.rows if self.rows else 0.0

    def significant(self, z_threshold: float) -> bool:
        """Off by more than `z_threshold` standard errors (0: always, the test is off)."""
        return z_threshold == 0 or abs(self.z) > z_threshold

    def text(self) -> str:
        return (
            f"{self.observed} conversions observed against {self.expected:.1f} expected over "
            f"{self.rows} outcomes (z {self.z:+.2f})"
        )


def calibration_gap(scores: np.ndarray, subscribed: np.ndarray) -> CalibrationGap:
    """The served scores taken as each outcome's probability: their sum is the expected count
    of conversions, and its variance under calibration the sum of p(1-p) (a Poisson-binomial,
    normal at the hundreds of outcomes a recalibration needs)."""
    p = np.clip(np.asarray(scores, float), 0.0, 1.0)
    observed = int(np.count_nonzero(subscribed))
    expected = float(p.sum())
    variance = float(np.sum(p * (1 - p)))
    z = (observed - expected) / math.sqrt(variance) if variance > 0 else 0.0
    return CalibrationGap(rows=len(p), expected=expected, observed=observed, z=z)
