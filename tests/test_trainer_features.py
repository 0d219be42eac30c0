"""Leakage, feature engineering, metrics, backtest mechanics and the gate rule (no broker)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from schemas import FEATURES
from trainer.candidates import (
    CANDIDATES,
    REFERENCE_CONFIGS,
    Config,
    build_pipeline,
    search_space,
)
from trainer.data import add_periods, labels, validate_frame
from trainer.evaluation import (
    backtest_origins,
    lift_top_fraction,
    random_cv_auc,
    rolling_backtest,
)
from trainer.features import BankFeatures, period_number
from trainer.gate import decide
from trainer.synthetic import synthetic_bank_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return add_periods(validate_frame(synthetic_bank_frame(1500, seed=3)))


@pytest.mark.parametrize("period", ["none", "index", "onehot"])
@pytest.mark.parametrize("candidate", CANDIDATES)
def test_duration_and_y_never_reach_the_model(frame, candidate, period):
    y = labels(frame)
    params = {"max_iter": 20} if "gradient" in candidate else {}
    pipeline = build_pipeline(candidate, params=params, period=period)
    pipeline.fit(frame, y)
    leaky = frame.assign(duration=np.where(y == 1, 5000, 0), y="garbage", extra=1)
    inputs = pipeline[:-1].transform(frame)
    leaky_inputs = pipeline[:-1].transform(leaky)
    np.testing.assert_array_equal(np.asarray(inputs), np.asarray(leaky_inputs))
    np.testing.assert_array_equal(pipeline.predict_proba(frame), pipeline.predict_proba(leaky))
    # Refitting on the leaky frame gives the same model: duration is not an input.
    refit = build_pipeline(candidate, params=params, period=period)
    refit.fit(leaky, y)
    np.testing.assert_allclose(refit.predict_proba(frame), pipeline.predict_proba(frame))
    # Served (FEATURES only), the leaky columns still change nothing.
    served = frame[list(FEATURES)]
    np.testing.assert_array_equal(
        pipeline.predict_proba(served), pipeline.predict_proba(leaky.drop(columns="period"))
    )


@pytest.mark.parametrize("period", ["index", "onehot"])
@pytest.mark.parametrize("candidate", CANDIDATES)
def test_serving_without_period_uses_the_last_fitted_period(frame, candidate, period):
    y = labels(frame)
    params = {"max_iter": 20} if "gradient" in candidate else {}
    pipeline = build_pipeline(candidate, params=params, period=period).fit(frame, y)
    last = str(frame["period"].max())
    assert pipeline.named_steps["features"].last_period_ == last
    served = frame[list(FEATURES)]  # what ModelArtifact.predict passes: no period column
    as_last = served.assign(period=last)
    np.testing.assert_allclose(pipeline.predict_proba(served), pipeline.predict_proba(as_last))
    # The period is a fit-time input: scores move with it when the frame carries one.
    first = served.assign(period=str(frame["period"].min()))
    features = pipeline.named_steps["features"]
    column = "period_index" if period == "index" else "period"
    assert not features.transform(first)[column].equals(features.transform(served)[column])


def test_period_effects_map_unseen_periods_and_need_a_period_to_fit(frame):
    features = BankFeatures(calendar=False, period="index").fit(frame)
    fitted = features.periods_
    rows = frame.iloc[:3][list(FEATURES)].assign(period=["2001-01", fitted[1], "2099-12"])
    index = features.transform(rows)["period_index"].to_numpy()
    expected = [period_number([p])[0] for p in (fitted[0], fitted[1], fitted[-1])]
    np.testing.assert_array_equal(index, expected)
    onehot = BankFeatures(calendar=False, period="onehot").fit(frame).transform(rows)
    assert list(onehot["period"]) == [fitted[0], fitted[1], fitted[-1]]
    with pytest.raises(ValueError, match="period"):
        BankFeatures(period="index").fit(frame[list(FEATURES)])


def test_backtest_scores_held_out_months_as_serving_does(frame):
    seen: dict[str, list[bool]] = {"fit": [], "predict": []}

    class Spy(LogisticRegression):
        def fit(self, x, y, sample_weight=None):
            seen["fit"].append("period" in x.columns)
            return super().fit(x[["age", "balance"]], y)

        def predict_proba(self, x):
            seen["predict"].append("period" in x.columns)
            return super().predict_proba(x[["age", "balance"]])

    rolling_backtest(frame, Spy, n_jobs=1)
    random_cv_auc(frame, Spy, folds=3, n_jobs=1)
    assert seen["fit"] and all(seen["fit"])
    assert seen["predict"] and not any(seen["predict"])


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
    # `callscore backtest` replays configurations the full search actually tries.
    assert set(REFERENCE_CONFIGS) == set(CANDIDATES)
    assert all(config in search_space() for config in REFERENCE_CONFIGS.values())


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
