"""Leakage, feature engineering, metrics, backtest mechanics and the gate rule (no broker)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from schemas import FEATURES
from trainer.candidates import CANDIDATES, Config, build_pipeline, search_space
from trainer.data import add_periods, labels, validate_frame
from trainer.evaluation import (
    backtest_origins,
    lift_top_fraction,
    random_cv_auc,
    rolling_backtest,
)
from trainer.features import BankFeatures
from trainer.publishing import decide
from trainer.synthetic import synthetic_bank_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return add_periods(validate_frame(synthetic_bank_frame(1500, seed=3)))


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_duration_and_y_never_reach_the_model(frame, candidate):
    y = labels(frame)
    pipeline = build_pipeline(candidate, params={"max_iter": 20} if "gradient" in candidate else {})
    pipeline.fit(frame, y)
    leaky = frame.assign(duration=np.where(y == 1, 5000, 0), y="garbage", extra=1)
    inputs = pipeline[:-1].transform(frame)
    leaky_inputs = pipeline[:-1].transform(leaky)
    np.testing.assert_array_equal(np.asarray(inputs), np.asarray(leaky_inputs))
    np.testing.assert_array_equal(pipeline.predict_proba(frame), pipeline.predict_proba(leaky))
    # Refitting on the leaky frame gives the same model: duration is not an input.
    refit = build_pipeline(candidate, params={"max_iter": 20} if "gradient" in candidate else {})
    refit.fit(leaky, y)
    np.testing.assert_allclose(refit.predict_proba(frame), pipeline.predict_proba(frame))


def test_engineered_pdays_and_calendar_switch():
    rows = synthetic_bank_frame(50, seed=1)
    rows.loc[0, "pdays"] = -1
    rows.loc[1, "pdays"] = 99
    out = BankFeatures(pdays="engineer", calendar=False).fit(rows).transform(rows)
    assert out.loc[0, "never_contacted"] == 1 and out.loc[0, "log_days_since_contact"] == 0
    assert out.loc[1, "never_contacted"] == 0
    assert out.loc[1, "log_days_since_contact"] == pytest.approx(np.log(100))
    assert "pdays" not in out and "month" not in out and "day" not in out
    dropped = BankFeatures(pdays="drop", calendar=True).fit(rows).transform(rows)
    assert "never_contacted" not in dropped and {"day", "month"} <= set(dropped.columns)
    assert not set(dropped.columns) & {"duration", "y"}


def test_unknown_category_is_ignored_not_an_error(frame):
    pipeline = build_pipeline("logistic").fit(frame, labels(frame))
    odd = frame.iloc[:5].copy()
    odd["job"] = "astronaut"  # not in the contract: the encoder ignores it
    assert pipeline.predict_proba(odd).shape == (5, 2)


def test_lift_and_origins(frame):
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    scores = np.linspace(1, 0, 10)
    assert lift_top_fraction(y, scores, 0.2) == pytest.approx(5.0)
    origins = backtest_origins(frame, min_train_rows=600)
    sizes = frame.groupby("period", sort=False).size()
    first = origins[0]
    assert sizes.loc[: sizes.index[sizes.index.get_loc(first) - 1]].sum() >= 600


def test_backtest_trains_only_on_earlier_periods_and_cadence_counts_fits(frame):
    make = Config("logistic").build
    monthly = rolling_backtest(frame, make, retrain_every=1, n_jobs=1)
    table = monthly.per_period
    assert table["retrained"].all()
    assert table["trained_rows"].is_monotonic_increasing
    first_train = table["trained_rows"].iloc[0]
    first_period = table["period"].iloc[0]
    assert first_train == int((frame["period"] < first_period).sum())
    quarterly = rolling_backtest(frame, make, retrain_every=3, n_jobs=1)
    assert quarterly.per_period["retrained"].sum() == int(np.ceil(len(table) / 3))
    never = rolling_backtest(frame, make, retrain_every=None, n_jobs=1)
    assert never.per_period["retrained"].sum() == 1
    weighted = table.dropna(subset=["roc_auc"])
    expected = float(np.average(weighted["roc_auc"], weights=weighted["rows"]))
    assert monthly.monthly_roc_auc == pytest.approx(expected)
    assert 0.0 < random_cv_auc(frame, make, folds=3, n_jobs=1) <= 1.0


def test_search_space_covers_every_candidate():
    for fast in (True, False):
        assert {c.candidate for c in search_space(fast)} == set(CANDIDATES)


def test_gate_rule():
    assert decide(0.70, None, 0.005).publish
    assert decide(0.698, 0.70, 0.005).publish  # within tolerance
    rejected = decide(0.68, 0.70, 0.005, champion_version=3)
    assert not rejected.publish and "v3" in rejected.reason
    forced = decide(0.68, 0.70, 0.005, force=True)
    assert forced.publish and forced.forced


def test_features_come_from_the_contract():
    assert "duration" not in FEATURES and "y" not in FEATURES


def test_cadence_table_counts_fits_per_cadence(frame):
    from trainer.cadence import cadence_table, run_cadences

    results = run_cadences(frame, ["1", "3", "never"], Config("logistic"), n_jobs=1)
    table = cadence_table(results)
    fits = dict(zip(table["retrain_every"], table["fits"], strict=True))
    assert fits["1"] > fits["3"] > fits["never"] == 1
    assert table["backtest_monthly_roc_auc"].between(0, 1).all()
