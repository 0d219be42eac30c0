"""The shape of a servable pipeline: the interface between the trainer, which builds pipelines,
and the serving plan (registry/serving_plan.py), which compiles them to plain numpy.

A pipeline of exactly these named steps, in this order, can be compiled:

  FEATURES_STEP  a `FeatureStep`: contract fields -> `FeatureArrays`
                 (trainer.feature_engineering.BankFeatures)
  ENCODE_STEP    a dense ColumnTransformer (one-hot blocks, numeric blocks passed or scaled)
  MODEL_STEP     a binary classifier

optionally wrapped in a one-step Pipeline around CalibratedClassifierCV. Any other pipeline is
still servable: it is served by its own `predict_proba`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

FEATURES_STEP = "features"
ENCODE_STEP = "encode"
MODEL_STEP = "model"
COMPILED_STEPS: tuple[str, ...] = (FEATURES_STEP, ENCODE_STEP, MODEL_STEP)


@dataclass(frozen=True)
class FeatureArrays:
    """The engineered features as plain arrays, in output column order (no pandas).

    numeric: name -> float64 values; categorical: name -> (codes into categories, categories),
    code -1 for a value outside the category list (a missing value to the encoders).
    """

    numeric: dict[str, np.ndarray]
    categorical: dict[str, tuple[np.ndarray, list[str]]]
    rows: int


@runtime_checkable
class FeatureStep(Protocol):
    def arrays(self, frame: Mapping[str, Any]) -> FeatureArrays:
        """The features of `frame` (a DataFrame, or column name -> values of the contract's
        FEATURES) as numpy arrays."""
        ...
