"""Test data builders: valid events and small signed models trained on synthetic data.

For tests, the bench and the demo's checks only; the product never imports this package.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core.settings import Settings
from registry.artifact import ModelArtifact
from schemas import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES, TrainingWindow
from trainer.metadata import build_metadata
from trainer.synthetic import synthetic_bank_frame

DEFAULT_MODEL_NAME: str = Settings.model_fields["model_name"].default


def valid_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "evt-1",
        "prospect_id": "cust-1",
        "occurred_at": "2026-11-26T09:00:00+00:00",
        "age": 41,
        "job": "technician",
        "marital": "married",
        "education": "secondary",
        "default": "no",
        "balance": 1200,
        "housing": "yes",
        "loan": "no",
        "contact": "cellular",
        "day": 15,
        "month": "may",
        "campaign": 2,
        "pdays": -1,
        "previous": 0,
        "poutcome": "unknown",
    }
    event.update(overrides)
    return event


@cache
def _fitted_pipeline(seed: int) -> Pipeline:
    frame = synthetic_bank_frame(rows=1500, seed=seed)
    pipeline = Pipeline(
        [
            (
                "features",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), list(NUMERIC_FEATURES)),
                        (
                            "categorical",
                            OneHotEncoder(handle_unknown="ignore"),
                            list(CATEGORICAL_FEATURES),
                        ),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=500)),
        ]
    )
    pipeline.fit(frame[list(FEATURES)], frame["y"] == "yes")
    return pipeline


def small_artifact(
    version: int = 1, model_name: str = DEFAULT_MODEL_NAME, seed: int = 1
) -> ModelArtifact:
    """A quickly fitted, real scikit-learn pipeline wrapped as a servable artifact."""
    pipeline = _fitted_pipeline(seed)
    frame = synthetic_bank_frame(rows=500, seed=seed + 100)
    scores = pipeline.predict_proba(frame[list(FEATURES)])[:, 1]
    metadata = build_metadata(
        model_name=model_name,
        version=version,
        candidate="logistic",
        data_rows=len(frame),
        data_sha256="0" * 64,
        window=TrainingWindow(start="2008-05", end="2010-11", rows=1500),
        metrics={"backtest_roc_auc": 0.7},
        validation=frame,
        validation_scores=scores,
        tier_fractions=(0.1, 0.2),
    )
    return ModelArtifact(pipeline, metadata)
