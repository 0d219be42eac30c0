"""The loop's statistics: the gate's paired AUC difference and the calibration test."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from feedback.significance import calibration_gap, paired_auc_difference
from trainer.gate import decide


def scored_rows(rows: int, seed: int, noise: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """Outcomes and two models' scores: each a latent signal plus its own noise."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    y = rng.uniform(size=rows) < 1 / (1 + np.exp(-(signal - 1.5)))
    first = signal + rng.normal(scale=noise[0], size=rows)
    second = signal + rng.normal(scale=noise[1], size=rows)
    return y, first, second


def direct_bootstrap(y, a, b, resamples, confidence, seed=0):
    """The same draws, written plainly with scikit-learn's AUC."""
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        rows = rng.integers(0, len(y), len(y))
        if 0 < y[rows].sum() < len(rows):
            differences.append(roc_auc_score(y[rows], a[rows]) - roc_auc_score(y[rows], b[rows]))
    tail = (1 - confidence) / 2
    return np.quantile(differences, [tail, 1 - tail]), len(differences)


def test_the_interval_is_the_direct_bootstrap():
    y, a, b = scored_rows(300, seed=1, noise=(1.0, 1.1))
    found = paired_auc_difference(y, a, b, resamples=400, confidence=0.9)
    (low, high), draws = direct_bootstrap(y, a, b, 400, 0.9)
    assert found is not None and found.resamples == draws
    assert (found.low, found.high) == pytest.approx((low, high), abs=1e-12)
    assert found.value == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert found.low < found.value < found.high


def test_a_candidate_within_noise_of_the_champion_is_published_not_refused():
    # The old rule refused anything 0.005 below the champion; on 400 rows that is noise.
    y, candidate, champion = scored_rows(400, seed=4, noise=(1.05, 1.0))
    difference = paired_auc_difference(y, candidate, champion, 1000, 0.95)
    assert difference is not None and difference.value < -0.005
    assert difference.low < 0 < difference.high  # the interval says: cannot tell
    auc = (roc_auc_score(y, candidate), roc_auc_score(y, champion))
    assert not decide(*auc, tolerance=0.005).publish  # the fixed tolerance refuses it
    decision = decide(*auc, tolerance=0.005, champion_version=1, difference=difference)
    assert decision.publish and "not worse beyond the interval" in decision.reason
    assert decision.metrics()["gate_roc_auc_difference_low"] == difference.low


def test_a_clearly_worse_candidate_keeps_the_champion_and_a_better_one_is_published():
    y, sharp, blurred = scored_rows(3000, seed=3, noise=(0.3, 2.0))
    worse = paired_auc_difference(y, blurred, sharp, 1000, 0.95)
    assert worse is not None and worse.high < 0
    refused = decide(
        roc_auc_score(y, blurred),
        roc_auc_score(y, sharp),
        0.005,
        champion_version=4,
        difference=worse,
    )
    assert not refused.publish and "worse beyond the interval" in refused.reason
    assert "v4" in refused.reason and "[" in refused.reason
    forced = decide(0.6, 0.7, 0.005, force=True, difference=worse)
    assert forced.publish and forced.forced
    better = paired_auc_difference(y, sharp, blurred, 1000, 0.95)
    assert better is not None and better.low > 0
    assert decide(roc_auc_score(y, sharp), roc_auc_score(y, blurred), 0.005, difference=better)


def test_one_class_gives_no_difference():
    y = np.zeros(50, bool)
    assert paired_auc_difference(y, np.arange(50.0), np.arange(50.0), 100, 0.95) is None


@pytest.mark.parametrize("seed", range(5))
def test_the_calibration_test_is_quiet_on_calibrated_scores_and_fires_on_shifted_ones(seed):
    rng = np.random.default_rng(seed)
    scores = rng.beta(2, 8, size=800)
    calibrated = rng.uniform(size=800) < scores
    quiet = calibration_gap(scores, calibrated)
    assert not quiet.significant(3.0) and abs(quiet.gap) < 0.03
    # The base rate doubled (as it did in mid-2009): the same scores now under-predict.
    shifted = rng.uniform(size=800) < np.minimum(2 * scores, 1)
    loud = calibration_gap(scores, shifted)
    assert loud.significant(3.0) and loud.gap > 0.1 and loud.z > 3
