"""Population Stability Index of scores and features against the training distribution.

PSI = sum over bins of (live - train) * ln(live / train). Rule of thumb: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 large shift (Settings.retrain_psi_threshold).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from schemas import CATEGORIES, FEATURES, Distribution, DriftBaseline

BINS = 10
# Empty bins get this share, so an unseen category costs a large but finite PSI.
EMPTY_BIN_SHARE = 1e-4


def numeric_distribution(values: Sequence[float], bins: int = BINS) -> Distribution:
    data = np.asarray(values, dtype=float)
    edges = np.unique(np.quantile(data, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, data, side="right"), minlength=len(edges) + 1)
    return Distribution(edges=edges.tolist(), proportions=(counts / len(data)).tolist())


def categorical_distribution(values: Iterable[Any], categories: Sequence[str]) -> Distribution:
    index = {c: i for i, c in enumerate(categories)}
    counts = np.zeros(len(categories) + 1)
    for value in values:
        counts[index.get(value, len(categories))] += 1
    return Distribution(
        categories=list(categories), proportions=(counts / max(counts.sum(), 1)).tolist()
    )


def bin_shares(baseline: Distribution, values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Share of `values` in each of the baseline's bins."""
    if baseline.edges is not None:
        edges = np.asarray(baseline.edges, dtype=float)
        bins = np.searchsorted(edges, np.asarray(values, dtype=float), side="right")
        counts = np.bincount(bins, minlength=len(edges) + 1)
    else:
        shares = categorical_distribution(values, baseline.categories or [])
        return np.asarray(shares.proportions)
    return counts / max(len(values), 1)


def psi(baseline: Distribution, values: Sequence[Any] | np.ndarray) -> float:
    expected = np.maximum(np.asarray(baseline.proportions, dtype=float), EMPTY_BIN_SHARE)
    actual = np.maximum(bin_shares(baseline, values), EMPTY_BIN_SHARE)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def build_baseline(features: Any, scores: Sequence[float]) -> DriftBaseline:
    """The training distribution of every feature (a frame with FEATURES) and of the scores."""
    return DriftBaseline(
        score=numeric_distribution(scores),
        features={
            name: (
                categorical_distribution(features[name], CATEGORIES[name])
                if name in CATEGORIES
                else numeric_distribution(features[name].astype(float))
            )
            for name in FEATURES
        },
        rows=len(features),
    )


def feature_psi(baseline: DriftBaseline, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """PSI of each feature over rows of features (e.g. PredictionRecord.features)."""
    return {
        name: psi(dist, [row[name] for row in rows]) for name, dist in baseline.features.items()
    }
