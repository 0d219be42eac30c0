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
from trainer.feature_engineering import BankFeatures, period_number
from trainer.gate import decide
from trainer.synthetic import synthetic_bank_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return add_periods(validate_frame(synthetic_bank_frame(1500, seed=3)))


@pytest.mark.parametrize("interactions", [False, True])
@pytest.mark.parametrize("period", ["none", "index", "onehot"])
@pytest.mark.parametrize("candidate", CANDIDATES)
def test_duration_and_y_never_reach_the_model(frame, candidate, period, interactions):
    y = labels(frame)
    params = {"max_iter": 20} if "gradient" in candidate else {}
    pipeline = build_pipeline(candidate, params=params, period=period, interactions=interactions)
    pipeline.fit(frame, y)
    leaky = frame.assign(duration=np.where(y == 1, 5000, 0), y="garbage", extra=1)
    inputs = pipeline[:-1].transform(frame)
    leaky_inputs = pipeline[:-1].transform(leaky)
    np.testing.assert_array_equal(np.asarray(inputs), np.asarray(leaky_inputs))
    np.testing.assert_array_equal(pipeline.predict_proba(frame), pipeline.predict_proba(leaky))
    # Refitting on the leaky frame gives the same model: duration is not an input.
    refit = build_pipeline(candidate, params=params, period=period, interactions=interactions)
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


def test_interaction_features_combine_contract_fields():
    rows = synthetic_bank_frame(6, seed=1)
    rows["pdays"] = [-1, 92, 93, 366, 367, 5]
    rows["previous"] = [0, 3, 20, 1, 2, 4]
    rows["poutcome"] = ["unknown", "success", "success", "failure", "other", "failure"]
    rows["housing"] = ["yes", "no", "yes", "no", "yes", "no"]
    rows["loan"] = ["yes", "no", "no", "yes", "no", "no"]
    out = BankFeatures(calendar=False, interactions=True).fit(rows).transform(rows)
    assert list(out["pdays_bucket"]) == [
        "never",
        "3 months",
        "6 months",
        "1 year",
        "more",
        "3 months",
    ]
    assert list(out["previous_success"]) == [0, 3, 10, 0, 0, 0]  # capped at PREVIOUS_CAP
    assert list(out["previous_failure"]) == [0, 0, 0, 1, 0, 4]
    assert list(out["loans"]) == [2, 0, 1, 1, 1, 0]
    plain = BankFeatures(calendar=False).fit(rows).transform(rows)
    assert set(out.columns) - set(plain.columns) == {
        "pdays_bucket",
        "previous_success",
        "previous_failure",
        "loans",
    }


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


def test_a_trailing_window_trains_on_its_months_only_and_scores_the_same_months(frame):
    from trainer.outcomes import trailing_periods
    from trainer.windows import run_windows, window_table

    results = run_windows(frame, ["expanding", "6"], Config("logistic"), n_jobs=1)
    expanding, six = (r.backtest.per_period for r in results)
    assert list(six["period"]) == list(expanding["period"])  # the same scored months
    periods = list(dict.fromkeys(frame["period"]))
    sizes = frame.groupby("period", sort=False).size()
    for row in six.itertuples():
        at = periods.index(row.period)
        assert row.trained_rows == sizes[periods[max(0, at - 6) : at]].sum()
    assert (six["trained_rows"] <= expanding["trained_rows"]).all()
    assert (six["trained_rows"] < expanding["trained_rows"]).any()
    table = window_table(results).set_index("window_months")
    assert np.isnan(table.loc["expanding", "auc_vs_expanding"])
    assert table.loc["6", "auc_vs_expanding"] == pytest.approx(
        (six["roc_auc"] - expanding["roc_auc"]).mean()
    )
    assert table["calibration_gap"].between(0, 1).all()
    # The training itself: the last 6 contact months, every row of them.
    kept = trailing_periods(frame, 6)
    assert list(dict.fromkeys(kept["period"])) == periods[-6:]
    assert len(kept) == sizes[periods[-6:]].sum()
    assert trailing_periods(frame, None) is frame


# --- the vectorised transform against the per-column pandas one it replaced -------------------
def _old_transform(features: BankFeatures, frame: pd.DataFrame) -> pd.DataFrame:
    """BankFeatures.transform as it was before it was vectorised (commit dd3f0e5), frozen."""
    from schemas import CATEGORICAL_FEATURES, CATEGORIES, MONTHS

    def old_periods() -> np.ndarray:
        if "period" not in frame.columns:
            return np.full(len(frame), features.last_period_, dtype=object)
        fitted = np.asarray(features.periods_, dtype=object)
        given = frame["period"].astype(str).to_numpy(dtype=object)
        position = np.searchsorted(fitted, given, side="right") - 1
        return fitted[np.clip(position, 0, len(fitted) - 1)]

    def old_period_number(periods: np.ndarray) -> np.ndarray:
        text = pd.Series(np.asarray(periods, dtype=object)).astype(str)
        return (text.str[:4].astype(int) * 12 + text.str[5:7].astype(int) - 1).to_numpy(float)

    x = frame[list(FEATURES)]
    out = pd.DataFrame(index=x.index)
    if features.period == "index":
        out["period_index"] = old_period_number(old_periods())
    elif features.period == "onehot":
        out["period"] = pd.Categorical(old_periods(), categories=features.periods_)
    out["age"] = x["age"].astype(float)
    balance = x["balance"].astype(float).clip(-5_000, 50_000)
    out["balance_log"] = np.sign(balance) * np.log1p(np.abs(balance))
    out["campaign_capped"] = x["campaign"].clip(upper=10).astype(float)
    out["previous_capped"] = x["previous"].clip(upper=10).astype(float)
    if features.pdays == "engineer":
        never = x["pdays"] < 0
        out["never_contacted"] = never.astype(float)
        out["log_days_since_contact"] = np.where(never, 0.0, np.log1p(x["pdays"].clip(0)))
    elif features.pdays == "raw":
        out["pdays"] = x["pdays"].astype(float)
    if features.calendar:
        month_number = x["month"].map({m: i for i, m in enumerate(MONTHS)}).astype(float)
        out["day"] = x["day"].astype(float)
        out["month_sin"] = np.sin(2 * np.pi * month_number / 12)
        out["month_cos"] = np.cos(2 * np.pi * month_number / 12)
    for name in CATEGORICAL_FEATURES:
        if name == "month" and not features.calendar:
            continue
        values = list(CATEGORIES[name])
        out[name] = pd.Categorical(x[name].where(x[name].isin(values)), categories=values)
    return out


def _edge_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows at and beyond every clip and cap, never-contacted and contacted pdays, values
    outside the contract, and periods before, between and after the fitted ones."""
    rows = frame.iloc[:8].copy().reset_index(drop=True)
    rows["balance"] = [-10_000_000, -5_001, -5_000, -1, 0, 1, 50_000, 100_000_000]
    rows["campaign"] = [1, 9, 10, 11, 1000, 2, 3, 4]
    rows["previous"] = [0, 9, 10, 11, 10_000, 1, 2, 3]
    rows["pdays"] = [-1, 0, 1, 999, 10_000, -1, 5, 6]
    rows["age"] = [18, 100, 40, 41, 42, 43, 44, 45]
    rows["day"] = [1, 31, 15, 2, 3, 4, 5, 6]
    rows["month"] = ["jan", "dec", "june", "may", "oct", "feb", "jul", "aug"]
    rows["job"] = ["astronaut", "admin.", "unknown", "retired", "student", "services", "x", ""]
    rows["poutcome"] = ["success", "other", "failure", "unknown", "?", "success", "other", "no"]
    periods = sorted(frame["period"].unique())
    rows["period"] = ["2001-01", periods[0], periods[1], "2099-12", periods[-1], *periods[2:5]]
    return rows.set_index(pd.Index(range(100, 108)))  # a non-default index is kept


@pytest.mark.parametrize("period", ["none", "index", "onehot"])
@pytest.mark.parametrize(
    ("pdays", "calendar"), [("engineer", False), ("raw", True), ("drop", True)]
)
def test_vectorised_transform_equals_the_per_column_one(frame, period, pdays, calendar):
    features = BankFeatures(pdays, calendar, period).fit(frame)
    edges = _edge_rows(frame)
    for rows in (frame, frame[list(FEATURES)], edges, edges[list(FEATURES)], frame.iloc[:1]):
        pd.testing.assert_frame_equal(features.transform(rows), _old_transform(features, rows))
    names = list(features.get_feature_names_out())
    assert names == list(_old_transform(features, frame).columns)


def test_feature_arrays_from_columns_equal_the_frame_transform(frame):
    """`arrays` takes plain column lists too (what the scorer builds), with the same values."""
    features = BankFeatures(calendar=True, period="index").fit(frame)
    served = _edge_rows(frame)[list(FEATURES)]
    from_lists = features.arrays({name: served[name].tolist() for name in FEATURES})
    from_frame = features.transform(served)
    for name, values in from_lists.numeric.items():
        np.testing.assert_array_equal(values, from_frame[name].to_numpy())
    for name, (codes, categories) in from_lists.categorical.items():
        np.testing.assert_array_equal(codes, from_frame[name].cat.codes.to_numpy())
        assert categories == list(from_frame[name].cat.categories)
