"""Online model quality from labelled predictions: the same numbers for the monitor's gauges,
`callscore report` and the scheduler's triggers.

Per model version: ROC-AUC, conversion rate by tier (does 'high' convert more than 'low'?),
calibration (mean score vs observed rate, Brier), and PSI of the scores and features against the
model's training distribution.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from pydantic import BaseModel

from feedback.join import Labelled
from feedback.psi import feature_psi, psi
from schemas import PRIORITIES, DriftBaseline, PredictionRecord, Priority


class TierConversion(BaseModel):
    calls: int
    subscribed: int
    rate: float | None


class Quality(BaseModel):
    model_version: int | None = None
    period: str | None = None
    outcomes: int
    positives: int
    roc_auc: float | None
    brier: float | None
    mean_score: float | None
    observed_rate: float | None
    conversion_by_tier: dict[Priority, TierConversion]
    predictions: int = 0
    score_psi: float | None = None
    feature_psi: dict[str, float] = {}


def latest_per_event(labelled: Iterable[Labelled]) -> list[Labelled]:
    """One label per event: the latest call's outcome wins (a re-called prospect)."""
    latest: dict[str, Labelled] = {}
    for item in labelled:
        kept = latest.get(item.prediction.event_id)
        if kept is None or item.outcome.called_at >= kept.outcome.called_at:
            latest[item.prediction.event_id] = item
    return list(latest.values())


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC of scores against outcomes; None unless both classes occur.

    The Mann-Whitney form (the positives' rank sum, tied scores sharing their average rank):
    sklearn's `roc_auc_score` to rounding, in three arrays of the input's length where its
    curve takes about eight (a scheduler's check over millions of calls: ~100 MB less)."""
    y = np.asarray(y, dtype=bool)
    positives = int(np.count_nonzero(y))
    negatives = len(y) - positives
    if not positives or not negatives:
        return None
    order = np.argsort(scores)
    ranked = np.asarray(scores, dtype=float)[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # runs of equal scores
    ends = np.r_[starts[1:], len(ranked)]
    del ranked
    positive_per_run = np.add.reduceat(y[order], starts, dtype=np.int64)
    rank_sum = float(np.dot(positive_per_run, (starts + ends + 1) / 2))
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def quality(
    labelled: Sequence[Labelled],
    predictions: Sequence[PredictionRecord] = (),
    baseline: DriftBaseline | None = None,
    min_rows_for_psi: int = 1,
) -> Quality:
    """Quality of one group of labelled predictions (one version, one period, or both)."""
    rows = latest_per_event(labelled)
    y = np.array([r.subscribed for r in rows], dtype=bool)
    scores = np.array([r.prediction.score for r in rows], dtype=float)
    drift_ok = baseline is not None and len(predictions) >= min_rows_for_psi
    return Quality(
        outcomes=len(rows),
        positives=int(y.sum()),
        roc_auc=roc_auc(y, scores),
        brier=float(np.mean((scores - y.astype(float)) ** 2)) if rows else None,
        mean_score=float(scores.mean()) if rows else None,
        observed_rate=float(y.mean()) if rows else None,
        conversion_by_tier=conversion_by_tier(rows),
        predictions=len(predictions),
        score_psi=psi(baseline.score, [p.score for p in predictions])
        if drift_ok and baseline
        else None,
        feature_psi=feature_psi(baseline, [p.features for p in predictions])
        if drift_ok and baseline
        else {},
    )


def conversion_by_tier(rows: Sequence[Labelled]) -> dict[Priority, TierConversion]:
    result = {}
    for tier in PRIORITIES:
        outcomes = [r.subscribed for r in rows if r.prediction.priority == tier]
        subscribed = sum(outcomes)
        rate = subscribed / len(outcomes) if outcomes else None
        result[tier] = TierConversion(calls=len(outcomes), subscribed=subscribed, rate=rate)
    return result


def period_of(prediction: PredictionRecord) -> str:
    at = prediction.occurred_at
    return f"{at.year:04d}-{at.month:02d}"


GroupKey = tuple[str | None, int]


def _grouped(
    labelled: Sequence[Labelled],
    predictions: Sequence[PredictionRecord],
    key: Callable[[PredictionRecord], GroupKey],
    baselines: dict[int, DriftBaseline] | None,
    min_rows_for_psi: int,
) -> list[Quality]:
    labels: dict[GroupKey, list[Labelled]] = defaultdict(list)
    scored: dict[GroupKey, list[PredictionRecord]] = defaultdict(list)
    for item in labelled:
        labels[key(item.prediction)].append(item)
    for prediction in predictions:
        scored[key(prediction)].append(prediction)
    rows = []
    for period, version in sorted(set(labels) | set(scored), key=lambda k: (k[0] or "", k[1])):
        group = quality(
            labels[(period, version)],
            scored[(period, version)],
            (baselines or {}).get(version),
            min_rows_for_psi,
        )
        rows.append(group.model_copy(update={"model_version": version, "period": period}))
    return rows


def quality_by_version(
    labelled: Sequence[Labelled],
    predictions: Sequence[PredictionRecord] = (),
    baselines: dict[int, DriftBaseline] | None = None,
    min_rows_for_psi: int = 1,
) -> dict[int, Quality]:
    rows = _grouped(
        labelled, predictions, lambda p: (None, p.model_version), baselines, min_rows_for_psi
    )
    return {row.model_version: row for row in rows if row.model_version is not None}


def quality_by_period(
    labelled: Sequence[Labelled],
    predictions: Sequence[PredictionRecord] = (),
    baselines: dict[int, DriftBaseline] | None = None,
) -> list[Quality]:
    """One row per (event-time month, model version), in time order: the report's series."""
    return _grouped(labelled, predictions, lambda p: (period_of(p), p.model_version), baselines, 1)
