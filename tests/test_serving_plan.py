"""The compiled predict path (registry/serving_plan.py) gives exactly the pipeline's numbers."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pandas as pd
import pytest

from registry.artifact import ModelArtifact
from registry.serving_plan import compile_plan
from schemas import FEATURES
from testkit.factories import small_artifact
from trainer.candidates import CANDIDATES, REFERENCE_CONFIGS, build_pipeline
from trainer.data import add_periods, labels, validate_frame
from trainer.final import calibrated
from trainer.synthetic import synthetic_bank_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return add_periods(validate_frame(synthetic_bank_frame(1500, seed=4)))


@pytest.fixture(scope="module")
def served_rows() -> pd.DataFrame:
    """Rows as they are served (FEATURES only), with values outside the contract and the clips."""
    rows = synthetic_bank_frame(300, seed=8)[list(FEATURES)].copy()
    rows.loc[0, "job"] = "astronaut"
    rows.loc[1, "poutcome"] = ""
    rows.loc[2, "balance"] = 100_000_000
    rows.loc[3, "balance"] = -10_000_000
    rows.loc[4, "campaign"] = 1000
    rows.loc[5, "pdays"] = -1
    return rows


def _pipeline_scores(pipeline, rows: pd.DataFrame) -> np.ndarray:
    return np.asarray(pipeline.predict_proba(rows)[:, 1], dtype=float)


def test_the_reference_model_is_compiled_and_exact(frame, served_rows):
    config = REFERENCE_CONFIGS["random_forest"]
    pipeline = calibrated(config, n_jobs=1).fit(frame, labels(frame))
    plan = compile_plan(pipeline)
    assert plan is not None
    np.testing.assert_array_equal(
        plan.predict({name: served_rows[name].tolist() for name in FEATURES}),
        _pipeline_scores(pipeline, served_rows),
    )
    # Pickled with its model (the /score process pool), it still serves the same numbers.
    again = pickle.loads(pickle.dumps(plan))
    columns = {name: served_rows[name].tolist() for name in FEATURES}
    np.testing.assert_array_equal(again.predict(columns), plan.predict(columns))
    # One row at a time gives each row's number from the batch.
    one = served_rows.iloc[:3]
    for i in range(3):
        alone = plan.predict({name: [one[name].iloc[i]] for name in FEATURES})
        assert alone[0] == _pipeline_scores(pipeline, one)[i]


@pytest.mark.parametrize("period", ["none", "index", "onehot"])
@pytest.mark.parametrize("candidate", CANDIDATES)
@pytest.mark.parametrize("calibrate", [False, True])
def test_every_candidate_is_exact_or_served_by_its_pipeline(
    frame, served_rows, candidate, period, calibrate
):
    params = {"max_iter": 20} if "gradient" in candidate else {"n_estimators": 5}
    params = params if candidate != "logistic" else {}
    config = REFERENCE_CONFIGS[candidate]
    pipeline = build_pipeline(candidate, config.pdays, True, params, 1, period)
    if calibrate:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.pipeline import Pipeline

        pipeline = Pipeline(
            [("calibrated", CalibratedClassifierCV(pipeline, cv=3, ensemble=False))]
        )
    pipeline.fit(frame, labels(frame))
    artifact = ModelArtifact(pipeline, small_artifact().metadata).compiled()
    if candidate == "hist_gradient_boosting":
        assert artifact.plan is None  # categoricals by dtype: its pipeline serves
    else:
        assert artifact.plan is not None
    expected = _pipeline_scores(pipeline, served_rows)
    np.testing.assert_array_equal(artifact.predict(served_rows), expected)
    columns = {name: served_rows[name].tolist() for name in FEATURES}
    np.testing.assert_array_equal(artifact.predict_columns(columns), expected)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(artifact)).predict(served_rows), expected
    )


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_interaction_features_serve_the_same_numbers_compiled(frame, served_rows, candidate):
    """The CRM interaction features (one more categorical, three numeric) go through the plan."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.pipeline import Pipeline

    params = {"max_iter": 20} if "gradient" in candidate else {"n_estimators": 5}
    params = params if candidate != "logistic" else {}
    inner = build_pipeline(candidate, params=params, period="index", interactions=True)
    pipeline = Pipeline([("calibrated", CalibratedClassifierCV(inner, cv=3, ensemble=False))])
    pipeline.fit(frame, labels(frame))
    artifact = ModelArtifact(pipeline, small_artifact().metadata).compiled()
    assert (artifact.plan is None) == (candidate == "hist_gradient_boosting")
    columns = {name: served_rows[name].tolist() for name in FEATURES}
    expected = _pipeline_scores(pipeline, served_rows)
    np.testing.assert_array_equal(artifact.predict_columns(columns), expected)


def test_a_plan_that_differs_from_its_pipeline_is_not_used(frame, caplog):
    from sklearn.pipeline import Pipeline

    class Nudged(Pipeline):
        def predict_proba(self, X, **params):
            return super().predict_proba(X, **params) + 1e-12

    pipeline = Nudged(build_pipeline("random_forest", params={"n_estimators": 3}).steps)
    pipeline.fit(frame, labels(frame))
    with caplog.at_level(logging.WARNING, logger="registry.serving_plan"):
        assert compile_plan(pipeline) is None
    assert "differs from the pipeline" in caplog.text


def test_a_step_that_fails_to_compile_leaves_the_pipeline_serving(frame, caplog):
    pipeline = build_pipeline("random_forest", params={"n_estimators": 3}, period="index")
    pipeline.fit(frame, labels(frame))
    del pipeline.named_steps["features"].periods_  # as if pickled by a version without it
    with caplog.at_level(logging.WARNING, logger="registry.serving_plan"):
        assert compile_plan(pipeline) is None
    assert "could not be compiled" in caplog.text


def test_other_shapes_serve_through_their_pipeline():
    artifact = small_artifact().compiled()  # encoder + scaler + logistic, no feature step
    assert artifact.plan is None
    rows = synthetic_bank_frame(20, seed=2)
    np.testing.assert_array_equal(
        artifact.predict(rows), _pipeline_scores(artifact.pipeline, rows[list(FEATURES)])
    )


def test_the_plan_is_built_where_a_model_is_loaded_to_serve(frame):
    """Building an artifact (training, recalibration, factories) compiles nothing; serving it
    (streamer.scoring.ServedModel, made by the model watcher) compiles it once."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from streamer.scoring import ServedModel

    pipeline = build_pipeline("random_forest", params={"n_estimators": 3}, period="index")
    pipeline.fit(frame, labels(frame))
    artifact = ModelArtifact(pipeline, small_artifact().metadata)
    assert artifact.plan is None
    manifest = SimpleNamespace(version=1)  # the plan depends on the artifact alone
    served = ServedModel(artifact, manifest, 0, datetime.now(UTC))
    assert served.artifact.plan is not None
    assert served.artifact.compiled() is served.artifact  # compiled once
