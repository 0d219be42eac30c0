"""The model artifact: a fitted scikit-learn Pipeline plus the metadata needed to serve it.

Serialized with joblib (pickle underneath), so bytes are only unpickled after their signature and
digest have been verified (see registry.signing.verify_and_load).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import joblib
import numpy as np
import pandas as pd
from pydantic import Field

from core.errors import CallscoreError
from registry.calibration import apply_calibration
from registry.serving_plan import Columns, ServingPlan, compile_plan
from schemas import FEATURES, PRIORITIES, ModelDescription, TierCutPoints
from schemas.tasks import Priority

ARTIFACT_FORMAT = 1


class ArtifactMetadata(ModelDescription):
    """The model description plus what only the artifact carries."""

    candidate: str = Field(description="Name of the selected candidate pipeline.")
    features: list[str]
    data_rows: int
    data_sha256: str
    validation_scores: list[float] = Field(
        description="Sorted quantiles of validation scores: percentiles and drift baselines."
    )


@dataclass(frozen=True)
class ModelArtifact:
    pipeline: Any  # a fitted sklearn Pipeline with predict_proba
    metadata: ArtifactMetadata
    # The pipeline's probabilities without its per-call overhead (registry/serving_plan.py),
    # when the pipeline has a shape it compiles and reproduces exactly; else None. Built by
    # `compiled()` where a model is loaded to serve, never by training or recalibration.
    plan: ServingPlan | None = field(default=None, repr=False, compare=False)

    def compiled(self) -> ModelArtifact:
        """This artifact with its serving plan compiled and checked on probe rows (about a
        second for a forest), or as it is when the pipeline does not compile."""
        if self.plan is not None:
            return self
        return replace(self, plan=compile_plan(self.pipeline))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """P(subscribe) for each row; the frame must hold the contract's FEATURES columns.

        The pipeline's probability, recalibrated when the artifact carries a calibration.
        """
        if self.plan is not None:
            return self.predict_columns({name: frame[name].to_numpy() for name in FEATURES})
        raw = np.asarray(self.pipeline.predict_proba(frame[list(FEATURES)])[:, 1], dtype=float)
        return apply_calibration(raw, self.metadata.calibration)

    def predict_columns(self, columns: Columns) -> np.ndarray:
        """`predict` for columns given as name -> values (one value per row, FEATURES names),
        without building a DataFrame when the compiled plan serves."""
        if self.plan is None:
            return self.predict(pd.DataFrame({name: columns[name] for name in FEATURES}))
        return apply_calibration(self.plan.predict(columns), self.metadata.calibration)

    def percentiles(self, scores: np.ndarray) -> np.ndarray:
        reference = np.asarray(self.metadata.validation_scores)
        ranks = np.searchsorted(reference, scores, side="right")
        return np.round(100.0 * ranks / len(reference), 2)

    def priorities(self, scores: np.ndarray) -> list[Priority]:
        cuts = self.metadata.tier_cut_points
        return [assign_priority(float(s), cuts) for s in scores]


def assign_priority(score: float, cuts: TierCutPoints) -> Priority:
    if score >= cuts.high:
        return PRIORITIES[0]
    if score >= cuts.medium:
        return PRIORITIES[1]
    return PRIORITIES[2]


def tier_cut_points(
    validation_scores: Sequence[float], high_fraction: float, medium_fraction: float
) -> TierCutPoints:
    """Cut points so that the top `high_fraction` of validation scores is 'high', etc."""
    scores = np.asarray(validation_scores, dtype=float)
    high = float(np.quantile(scores, 1.0 - high_fraction))
    medium = float(np.quantile(scores, 1.0 - high_fraction - medium_fraction))
    return TierCutPoints(high=high, medium=min(medium, high))


def score_quantiles(scores: Sequence[float], points: int = 1001) -> list[float]:
    """A compact, sorted summary of a score distribution (kept in the artifact)."""
    values = np.quantile(np.asarray(scores, dtype=float), np.linspace(0, 1, points))
    return [float(v) for v in values]


def dump_artifact(artifact: ModelArtifact) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(
        {
            "format": ARTIFACT_FORMAT,
            "metadata": artifact.metadata.model_dump(mode="json"),
            "pipeline": artifact.pipeline,
        },
        buffer,
        compress=3,
    )
    return buffer.getvalue()


class ArtifactError(CallscoreError):
    """The bytes are not a readable model artifact."""


def load_artifact(data: bytes) -> ModelArtifact:
    """Unpickle an artifact. Call only on bytes whose signature and sha256 were verified."""
    try:
        payload = joblib.load(io.BytesIO(data))
    except Exception as exc:  # joblib/pickle raise many kinds on corrupt input
        raise ArtifactError(f"artifact is corrupted or truncated: {type(exc).__name__}") from exc
    if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"not a callqueue-scorer artifact of format {ARTIFACT_FORMAT}")
    return ModelArtifact(payload["pipeline"], ArtifactMetadata.model_validate(payload["metadata"]))
