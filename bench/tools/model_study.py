"""Model quality on the honest protocol: candidate pipelines side by side on bank-full's
rolling monthly backtest (issue 19), against the forest reference as it was before the study
(BASELINE: the reference has since adopted the study's 120-tree candidate, the table reads the
same).

    .venv/bin/python -m bench.tools.model_study [--data bank-full.csv.gz] [--only NAME ...]

For each candidate: the row-weighted per-month ROC-AUC (the selection metric); its difference
to the reference month by month, weighted as the metric is, ± its standard error (the months
taken as independent: a difference smaller than its noise is not a result) and the months it
was better in; the pooled AUC, top-decile lift, Brier, and 5-fold random CV (reported, never
selected on). Prints a table, writes bench/results/model_study.json.

    .venv/bin/python -m bench.tools.model_study --serving-cost

What a forest's size costs where it runs, side by side: for the reference and the larger
forests, the time to fit the shipped (calibrated) pipeline on every row, the size of its
artifact (the model topic carries it inline up to CALLSCORE_INLINE_ARTIFACT_MAX_BYTES) and
the compiled plan's predict time per scorer batch of 1, 50 and 500 events
(registry/serving_plan.py, the fastest of many runs). Writes bench/results/model_serving_cost.json.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sklearn.base import BaseEstimator, ClassifierMixin, clone

from bench.results import write_results
from bench.tools.micro import best_seconds
from core.settings import Settings
from registry.artifact import ModelArtifact, dump_artifact
from registry.serving_plan import compile_plan
from schemas import FEATURES
from testkit.factories import small_artifact
from trainer.candidates import REFERENCE_CONFIGS, Config
from trainer.data import labels, load_bank, resolve_data_path
from trainer.evaluation import random_cv_auc, rolling_backtest
from trainer.final import calibrated
from trainer.synthetic import synthetic_bank_frame

console = Console(width=200)


class MeanOf(ClassifierMixin, BaseEstimator):
    """The mean predicted probability of several pipelines (a soft-voting ensemble)."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members

    def fit(self, frame: pd.DataFrame, y: np.ndarray) -> MeanOf:
        self.fitted_ = [clone(m).fit(frame, y) for m in self.members]
        self.classes_ = self.fitted_[0].classes_
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return np.mean([m.predict_proba(frame) for m in self.fitted_], axis=0)


# The forest reference before the study: 60 trees, leaves of 100, no interactions.
BASELINE = Config(
    "random_forest",
    params={"min_samples_leaf": 100, "max_depth": 10, "max_features": "sqrt"},
    period="index",
)


def _variant(base: Config, interactions: bool = False, **params: Any) -> Config:
    """A configuration with some parameters changed."""
    merged = {**base.params, **params}
    return Config(base.candidate, base.pdays, base.calendar, merged, base.period, interactions)


def _hgb(interactions: bool = False, **params: Any) -> Config:
    return _variant(REFERENCE_CONFIGS["hist_gradient_boosting"], interactions, **params)


def _forest(interactions: bool = False, **params: Any) -> Config:
    return _variant(BASELINE, interactions, **params)


def _leaf_50(trees: int) -> dict[str, Any]:
    return {"n_estimators": trees, "min_samples_leaf": 50}


def candidates() -> dict[str, Callable[[], Any]]:
    forest_300 = _forest(n_estimators=300)
    return {
        "reference: " + BASELINE.label: BASELINE.build,
        "random forest, 300 trees": forest_300.build,
        "random forest, 300 trees, min leaf 50": _forest(**_leaf_50(300)).build,
        "random forest, 300 trees, day/month": Config(
            "random_forest", "engineer", True, forest_300.params, "index"
        ).build,
        "HGB reference + period index": REFERENCE_CONFIGS["hist_gradient_boosting"].build,
        "HGB lr 0.03, 400 iter, 15 leaves, min leaf 300, L2 10": _hgb(
            learning_rate=0.03,
            max_iter=400,
            max_depth=None,
            max_leaf_nodes=15,
            min_samples_leaf=300,
            l2_regularization=10.0,
        ).build,
        "reference + interactions": _forest(interactions=True).build,
        # With leaves of 50: how much of the gain the number of trees brings (120 trees is the
        # reference since).
        **{
            f"random forest, {trees} trees, min leaf 50 + interactions": _forest(
                True, **_leaf_50(trees)
            ).build
            for trees in (300, 60, 120)
        },
        # The forest's own noise: the same configurations with other seeds.
        **{
            f"{name}, seed {seed}": _forest(interactions, random_state=seed, **params).build
            for name, interactions, params in (
                ("reference", False, {}),
                ("300 trees, min leaf 50 + interactions", True, _leaf_50(300)),
                ("120 trees, min leaf 50 + interactions", True, _leaf_50(120)),
            )
            for seed in (1, 2)
        },
        "HGB reference + interactions": _hgb(interactions=True).build,
        "logistic reference": REFERENCE_CONFIGS["logistic"].build,
        "logistic reference + interactions": _variant(
            REFERENCE_CONFIGS["logistic"], interactions=True
        ).build,
        "mean of forest (300) + HGB + logistic": lambda: MeanOf(
            [
                forest_300.build(),
                REFERENCE_CONFIGS["hist_gradient_boosting"].build(),
                REFERENCE_CONFIGS["logistic"].build(),
            ]
        ),
    }


def study(frame: pd.DataFrame, only: list[str] | None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    reference_months: pd.DataFrame | None = None
    for name, make in candidates().items():
        if only and not any(o in name for o in only) and not name.startswith("reference"):
            continue
        started = time.monotonic()
        backtest = rolling_backtest(frame, make)
        months = backtest.per_period.set_index("period")
        row: dict[str, Any] = {"candidate": name, **backtest.summary()}
        if reference_months is None:
            reference_months = months
        row.update(paired_difference(months, reference_months))
        row["random_cv_roc_auc"] = random_cv_auc(frame, make)
        row["seconds"] = round(time.monotonic() - started, 1)
        row["per_month"] = {str(k): float(v) for k, v in months["roc_auc"].items()}
        console.print(f"{escape(name)}: {row['backtest_monthly_roc_auc']:.4f} ({row['seconds']} s)")
        rows.append(row)
    return rows


def paired_difference(months: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float]:
    """Month by month against the reference, weighted by rows as the selection metric is: the
    mean difference (the metrics' difference), its standard error (the months taken as
    independent) and in how many months the candidate was better."""
    reference_auc = reference[["roc_auc"]].rename(columns={"roc_auc": "roc_auc_ref"})
    both = months[["roc_auc", "rows"]].join(reference_auc).dropna()
    d = (both["roc_auc"] - both["roc_auc_ref"]).to_numpy()
    w = both["rows"].to_numpy(dtype=float)
    mean = float(np.average(d, weights=w))
    return {
        "vs_reference_mean": mean,
        "vs_reference_se": float(np.sqrt(np.sum(w**2 * (d - mean) ** 2)) / w.sum()),
        "months_better": int((d > 0).sum()),
        "months": len(d),
    }


# Candidates whose cost of serving matters: the reference and the forests that beat it.
SERVING_COST: dict[str, Config] = {
    "reference (60 trees, min leaf 100)": BASELINE,
    "300 trees, min leaf 50": _forest(**_leaf_50(300)),
    "300 trees, min leaf 50 + interactions": _forest(True, **_leaf_50(300)),
    "120 trees, min leaf 50 + interactions": _forest(True, **_leaf_50(120)),
    "60 trees, min leaf 50 + interactions": _forest(True, **_leaf_50(60)),
    "reference + interactions": _forest(interactions=True),
}
SERVING_BATCHES = {1: 200, 50: 80, 500: 30}  # batch size -> repetitions


def serving_cost(frame: pd.DataFrame) -> list[dict[str, Any]]:
    served = synthetic_bank_frame(max(SERVING_BATCHES), seed=5)
    metadata = small_artifact().metadata  # a few KB beside the pipeline: any will do
    rows: list[dict[str, Any]] = []
    for name, config in SERVING_COST.items():
        started = time.monotonic()
        pipeline = calibrated(config, n_jobs=2).fit(frame, labels(frame))
        row: dict[str, Any] = {"candidate": name, "fit_s": round(time.monotonic() - started, 1)}
        # What the model channel carries (registry.artifact.dump_artifact, compressed).
        artifact = ModelArtifact(pipeline, metadata)
        row["artifact_mb"] = round(len(dump_artifact(artifact)) / 2**20, 2)
        plan = compile_plan(pipeline)
        if plan is None:
            raise SystemExit(f"{name}: the pipeline did not compile to a serving plan")
        for size, repeats in SERVING_BATCHES.items():
            columns = {f: served[f].iloc[:size].tolist() for f in FEATURES}
            predict = partial(plan.predict, columns)
            row[f"predict_ms_{size}"] = 1000 * best_seconds(predict, repeats)
        console.print(row)
        rows.append(row)
    return rows


def print_serving_cost(rows: list[dict[str, Any]]) -> None:
    table = Table(title="fit on bank-full and compiled predict per batch (ms, fastest run)")
    batches = (f"batch {size}" for size in SERVING_BATCHES)
    for column in ("candidate", "fit s", "artifact MiB", *batches):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    base = rows[0]
    for row in rows:
        times = [(row[f"predict_ms_{n}"], base[f"predict_ms_{n}"]) for n in SERVING_BATCHES]
        cells = [f"{ms:.2f} ({ms / reference:.1f}x)" for ms, reference in times]
        table.add_row(
            escape(row["candidate"]), f"{row['fit_s']:.0f}", f"{row['artifact_mb']:.2f}", *cells
        )
    console.print(table)


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="rolling monthly backtest on bank-full (selection: per-month AUC)")
    for column in (
        "candidate",
        "per-month AUC",
        "vs reference (± s.e.)",
        "months better",
        "pooled AUC",
        "lift top 10%",
        "Brier",
        "random CV AUC",
        "s",
    ):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for row in rows:
        table.add_row(
            escape(row["candidate"]),
            f"{row['backtest_monthly_roc_auc']:.4f}",
            f"{row['vs_reference_mean']:+.4f} ± {row['vs_reference_se']:.4f}",
            f"{row['months_better']} of {row['months']}",
            f"{row['backtest_roc_auc']:.3f}",
            f"{row['backtest_lift_top_decile']:.2f}",
            f"{row['brier']:.3f}",
            f"{row['random_cv_roc_auc']:.3f}",
            f"{row['seconds']:.0f}",
        )
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.model_study")
    parser.add_argument("--data", default=None)
    parser.add_argument("--only", nargs="*", help="candidates whose name contains one of these")
    parser.add_argument("--serving-cost", action="store_true", help="fit and predict times")
    args = parser.parse_args()
    settings = Settings(_env_file=None)
    frame, _sha = load_bank(resolve_data_path(args.data, settings))
    if args.serving_cost:
        cost = serving_cost(frame)
        print_serving_cost(cost)
        print(write_results("model_serving_cost", cost))
        return
    rows = study(frame, args.only)
    print_table(rows)
    print(write_results("model_study", rows))


if __name__ == "__main__":
    main()
