"""Score calibration as a monotone map: sigmoid(slope * logit(score) + intercept).

Applied by ModelArtifact.predict when an artifact carries one; fitted by feedback.recalibrate.
"""

from __future__ import annotations

import numpy as np

from schemas import ScoreCalibration

# Scores are clipped away from 0 and 1 before the logit, so a hard 0/1 stays finite.
SCORE_EPSILON = 1e-6


def logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(np.asarray(scores, dtype=float), SCORE_EPSILON, 1 - SCORE_EPSILON)
    return np.log(clipped / (1 - clipped))


def apply_calibration(scores: np.ndarray, calibration: ScoreCalibration | None) -> np.ndarray:
    if calibration is None:
        return np.asarray(scores, dtype=float)
    z = calibration.slope * logit(scores) + calibration.intercept
    return 1.0 / (1.0 + np.exp(-z))
