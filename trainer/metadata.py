"""The one builder of a new model's metadata (`ArtifactMetadata`).

Training, the bench's production model and the test factories all describe a freshly fitted
pipeline the same way: the feature contract and its hash, the runtime versions, the tier cut
points and score quantiles of its validation scores, and the drift baseline of the validation
rows. Only what differs between them is a parameter. (A recalibration derives its metadata from
the served model's instead: feedback/recalibrate.py.)
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from datetime import UTC, datetime

import pandas as pd
import sklearn

from feedback.psi import build_baseline
from registry.artifact import ArtifactMetadata, score_quantiles, tier_cut_points
from schemas import FEATURES, TrainingWindow, feature_contract_hash


def window_of(frame: pd.DataFrame) -> TrainingWindow:
    """The contact periods a chronological frame (with a `period` column) spans."""
    periods = frame["period"]
    return TrainingWindow(start=str(periods.iloc[0]), end=str(periods.iloc[-1]), rows=len(frame))


def build_metadata(
    *,
    model_name: str,
    version: int,
    candidate: str,
    data_rows: int,
    data_sha256: str,
    window: TrainingWindow,
    metrics: dict[str, float],
    validation: pd.DataFrame,
    validation_scores: Iterable[float],
    tier_fractions: tuple[float, float],
    reason: str = "",
    labelled_until: datetime | None = None,
) -> ArtifactMetadata:
    """`validation` holds the rows `validation_scores` were computed on: the newest labelled
    population, on which the tiers are cut and against which drift is measured."""
    scores = [float(v) for v in validation_scores]
    high, medium = tier_fractions
    return ArtifactMetadata(
        model_name=model_name,
        version=version,
        created_at=datetime.now(UTC),
        candidate=candidate,
        features=list(FEATURES),
        feature_contract_hash=feature_contract_hash(),
        data_rows=data_rows,
        data_sha256=data_sha256,
        training_window=window,
        metrics=metrics,
        tier_cut_points=tier_cut_points(scores, high, medium),
        sklearn_version=sklearn.__version__,
        python_version=platform.python_version(),
        validation_scores=score_quantiles(scores),
        drift_baseline=build_baseline(validation[list(FEATURES)], scores),
        reason=reason,
        labelled_until=labelled_until,
    )
