"""The pipeline's P(subscribe) as plain numpy calls: compiled once per model, checked against it.

A scikit-learn Pipeline pays a fixed cost on every predict_proba call whatever the batch size:
pandas frames built and split per column, input validation in every step, the one-hot encoder
checking each column, a joblib dispatch per tree. For the shipped model (features -> column
transformer -> random forest, sigmoid-calibrated) that was ~20 ms a call, most of a stream
batch's time. The plan computes the same numbers from the same fitted objects without it:

  features   the feature step's `arrays` (trainer.feature_engineering.BankFeatures): numpy
             columns and category codes, no DataFrame;
  encode     numeric blocks passed through (or scaled by the fitted StandardScaler); each
             one-hot block read from a table of the fitted encoder's own output for every code
             (an encoder encodes each column on its own, so a row's block is the sum of its
             columns' table rows; exact for 0/1);
  model      a forest: the trees' predict_proba summed in the forest's order and divided as
             RandomForestClassifier does; any other estimator: its own predict_proba /
             decision_function on the matrix;
  calibrate  the fitted sigmoid calibrator, and CalibratedClassifierCV's binary post-processing.

The step names and the feature step's `arrays` are the interface declared in
registry/pipeline_steps.py. Any other pipeline shape is not compiled (the pipeline serves). A
compiled plan is used only if it reproduces the pipeline's probabilities exactly on probe rows
covering every category, a value outside the contract and the numeric ranges; otherwise the
pipeline serves and a warning says so. It is built where a model is loaded to serve
(`ModelArtifact.compiled`, called by `streamer.scoring.ServedModel`), not when an artifact is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from registry.pipeline_steps import (
    COMPILED_STEPS,
    ENCODE_STEP,
    FEATURES_STEP,
    MODEL_STEP,
    FeatureStep,
)
from schemas import CATEGORIES, FEATURES, ProspectEvent

log = logging.getLogger(__name__)

Columns = Mapping[str, Sequence[Any] | np.ndarray]
PROBE_ROWS = 400
PROBE_SEED = 20240611
# CalibratedClassifierCV's rule: a probability above 1 by at most this much is 1.
_CALIBRATED_OVERSHOOT = 1e-5


class NotCompilable(Exception):
    """The pipeline has a shape the plan does not reproduce; it serves itself."""


@dataclass(frozen=True)
class NumericBlock:
    columns: list[str]
    output: slice
    scaler: Any | None  # a fitted StandardScaler, or None for passthrough


@dataclass(frozen=True)
class OneHotBlock:
    columns: list[str]
    output: slice
    base: np.ndarray  # the encoder's output when every column is missing
    tables: list[np.ndarray]  # per column: row code+1 -> that column's change to base


@dataclass(frozen=True)
class ServingPlan:
    features: FeatureStep  # the fitted feature step
    numeric: list[NumericBlock]
    onehot: list[OneHotBlock]
    width: int
    positive: Callable[[np.ndarray], np.ndarray]  # encoded matrix -> the model's positive output
    calibrator: Any | None  # sigmoid calibrator of CalibratedClassifierCV (ensemble=False)

    def predict(self, columns: Columns) -> np.ndarray:
        """P(positive) for each row of `columns` (name -> values of the contract's FEATURES)."""
        arrays = self.features.arrays(columns)
        matrix = np.empty((arrays.rows, self.width), dtype=float)
        for block in self.numeric:
            values = np.column_stack([arrays.numeric[name] for name in block.columns])
            if block.scaler is not None:  # StandardScaler.transform's arithmetic, in place
                if block.scaler.with_mean:
                    values -= block.scaler.mean_
                if block.scaler.with_std:
                    values /= block.scaler.scale_
            matrix[:, block.output] = values
        for onehot in self.onehot:
            encoded = np.broadcast_to(onehot.base, (arrays.rows, onehot.base.size)).copy()
            for name, table in zip(onehot.columns, onehot.tables, strict=True):
                encoded += table[arrays.categorical[name][0] + 1]
            matrix[:, onehot.output] = encoded
        scores = self.positive(matrix)
        if self.calibrator is None:
            return scores
        calibrated = np.asarray(self.calibrator.predict(scores), dtype=float)
        calibrated[(calibrated > 1.0) & (calibrated <= 1.0 + _CALIBRATED_OVERSHOOT)] = 1.0
        return calibrated


def _steps(pipeline: Any) -> tuple[Any, Any | None]:
    """(the feature/encode/model Pipeline, its sigmoid calibrator or None)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline):
        raise NotCompilable("not a Pipeline")
    last = pipeline.steps[-1][1]
    if isinstance(last, CalibratedClassifierCV):
        if len(pipeline.steps) != 1:
            raise NotCompilable("steps before the calibrated classifier")
        if len(last.calibrated_classifiers_) != 1 or len(last.classes_) != 2:
            raise NotCompilable("not a binary calibrated classifier with ensemble=False")
        calibrated = last.calibrated_classifiers_[0]
        if calibrated.method != "sigmoid" or len(calibrated.calibrators) != 1:
            raise NotCompilable(f"calibration method {calibrated.method!r}")
        inner = calibrated.estimator
        if not isinstance(inner, Pipeline):
            raise NotCompilable("the calibrated estimator is not a Pipeline")
        return inner, calibrated.calibrators[0]
    return pipeline, None


def _blocks(
    encode: Any, features: FeatureStep
) -> tuple[list[NumericBlock], list[OneHotBlock], int]:
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    if not isinstance(encode, ColumnTransformer) or encode.sparse_output_:
        raise NotCompilable("the encode step is not a dense ColumnTransformer")
    sample = features.arrays({name: _probe_columns(1)[name] for name in FEATURES})
    numeric_names, categorical_names = set(sample.numeric), set(sample.categorical)
    numeric: list[NumericBlock] = []
    onehot: list[OneHotBlock] = []
    width = 0
    for name, transformer, columns in encode.transformers_:
        output = encode.output_indices_[name]
        width = max(width, output.stop)
        if transformer == "drop" or output.stop == output.start:
            continue
        columns = list(columns)
        if set(columns) <= numeric_names:
            if transformer == "passthrough" or (
                isinstance(transformer, FunctionTransformer) and transformer.func is None
            ):
                numeric.append(NumericBlock(columns, output, None))
            elif isinstance(transformer, StandardScaler):
                numeric.append(NumericBlock(columns, output, transformer))
            else:
                raise NotCompilable(f"numeric transformer {type(transformer).__name__}")
        elif set(columns) <= categorical_names and isinstance(transformer, OneHotEncoder):
            onehot.append(_onehot_block(transformer, columns, output, sample.categorical))
        else:
            raise NotCompilable(f"transformer {name!r} ({type(transformer).__name__})")
    return numeric, onehot, width


def _onehot_block(
    encoder: Any, columns: list[str], output: slice, sample: dict[str, tuple[np.ndarray, list[str]]]
) -> OneHotBlock:
    """The fitted encoder's output for each code of each column, every other column missing."""
    categories = {name: sample[name][1] for name in columns}

    def encoded(codes: dict[str, np.ndarray]) -> np.ndarray:
        frame = pd.DataFrame(
            {
                name: pd.Categorical.from_codes(codes[name], categories=categories[name])
                for name in columns
            }
        )
        return np.asarray(encoder.transform(frame), dtype=float)

    missing = {name: np.array([-1]) for name in columns}
    base = encoded(missing)[0]
    tables = []
    for name in columns:
        every_code = np.arange(-1, len(categories[name]))
        others = {other: np.full(every_code.size, -1) for other in columns if other != name}
        tables.append(encoded({**others, name: every_code}) - base)
    return OneHotBlock(columns, output, base, tables)


@dataclass(frozen=True)
class ForestOutput:
    """RandomForestClassifier.predict_proba's positive column: float32 input, the trees'
    probabilities summed in order (as its one-job accumulation does), divided by their count."""

    trees: list[Any]
    n_classes: int

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(matrix, dtype=np.float32)
        total = np.zeros((x.shape[0], self.n_classes), dtype=np.float64)
        for tree in self.trees:
            total += tree.predict_proba(x, check_input=False)
        total /= len(self.trees)
        return total[:, 1]


@dataclass(frozen=True)
class EstimatorOutput:
    """The estimator's own decision_function, or its predict_proba's positive column."""

    model: Any
    decision_function: bool

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        if self.decision_function:
            return np.asarray(self.model.decision_function(matrix), dtype=float)
        return np.asarray(self.model.predict_proba(matrix)[:, 1], dtype=float)


def _positive_output(model: Any, calibrated: bool) -> Callable[[np.ndarray], np.ndarray]:
    """The positive class's predict_proba column; under a calibrator, what
    CalibratedClassifierCV reads: decision_function if the estimator has one.
    Classes, not closures: a plan is pickled with its model (the /score process pool)."""
    from sklearn.ensemble import RandomForestClassifier

    if len(getattr(model, "classes_", ())) != 2:
        raise NotCompilable("not a binary classifier")
    if isinstance(model, RandomForestClassifier) and model.n_outputs_ == 1:
        return ForestOutput(list(model.estimators_), int(model.n_classes_))
    return EstimatorOutput(model, calibrated and hasattr(model, "decision_function"))


def _plan(pipeline: Any) -> ServingPlan:
    inner, calibrator = _steps(pipeline)
    steps = dict(inner.steps)
    if tuple(steps) != COMPILED_STEPS or not isinstance(steps[FEATURES_STEP], FeatureStep):
        raise NotCompilable(f"steps {list(steps)}")
    numeric, onehot, width = _blocks(steps[ENCODE_STEP], steps[FEATURES_STEP])
    positive = _positive_output(steps[MODEL_STEP], calibrated=calibrator is not None)
    return ServingPlan(steps[FEATURES_STEP], numeric, onehot, width, positive, calibrator)


def compile_plan(pipeline: Any) -> ServingPlan | None:
    """The plan of `pipeline`, if it has the compiled shape and reproduces the pipeline's
    probabilities exactly on the probe rows; None otherwise (the pipeline serves)."""
    try:
        plan = _plan(pipeline)
    except NotCompilable as exc:
        log.debug("model served by its pipeline: %s", exc)
        return None
    except Exception as exc:  # e.g. a step pickled by an older version: never stop a load
        log.warning("the predict path could not be compiled (%r): served by the pipeline", exc)
        return None
    probe = _probe_columns(PROBE_ROWS)
    try:
        expected = np.asarray(pipeline.predict_proba(pd.DataFrame(probe))[:, 1], dtype=float)
        got = plan.predict(probe)
    except Exception as exc:  # a plan must never stop a model from loading
        log.warning(
            "the compiled predict path could not be checked (%s): served by the pipeline", exc
        )
        return None
    if not np.array_equal(got, expected):
        log.warning(
            "the compiled predict path differs from the pipeline (max |diff| %.3g): the model "
            "is served by its pipeline (slower)",
            float(np.max(np.abs(got - expected))),
        )
        return None
    return plan


def _bounds(name: str) -> tuple[int, int]:
    low, high = -(10**6), 10**6
    for constraint in ProspectEvent.model_fields[name].metadata:
        low = getattr(constraint, "ge", low)
        high = getattr(constraint, "le", high)
    return int(low), int(high)


def _probe_columns(rows: int) -> dict[str, list[Any]]:
    """Deterministic probe rows: every category in each categorical column, and a value outside
    the contract (except in `month`, which the calendar features read as a number); numeric
    values at the contract's bounds, small and mid-sized."""
    rng = np.random.default_rng(PROBE_SEED)
    columns: dict[str, list[Any]] = {}
    for name in FEATURES:
        if name in CATEGORIES:
            outside = [] if name == "month" else ["outside-the-contract"]
            values: list[Any] = [*CATEGORIES[name], *outside]
            columns[name] = [values[(i * 7 + len(name)) % len(values)] for i in range(rows)]
            continue
        low, high = _bounds(name)
        pool = np.concatenate(
            [
                [low, high, low + 1, 0 if low <= 0 <= high else low],
                rng.integers(low, min(high, low + 60) + 1, 40),
                rng.integers(max(low, -6000), min(high, 60_000) + 1, 40),
                rng.integers(low, high + 1, 10),
            ]
        )
        columns[name] = [int(v) for v in rng.choice(pool, rows)]
    return columns
