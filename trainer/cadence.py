"""`callscore backtest`: one pipeline, several retraining cadences, same scored months.

Answers "how often must it be retrained?" with data: a model refitted every N months (or never
after the first origin) scores each later month; compare per-month and pooled metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from trainer.candidates import Config
from trainer.evaluation import BacktestResult, rolling_backtest

# The best configuration of each family on bank-full (see docs/model-card.md); the tree models
# with contact-period effects, as selected by the reference `callscore train` run.
CONFIGS: dict[str, Config] = {
    "logistic": Config("logistic", params={"C": 0.01}),
    "hist_gradient_boosting": Config(
        "hist_gradient_boosting",
        params={
            "max_iter": 150,
            "learning_rate": 0.05,
            "max_depth": 3,
            "min_samples_leaf": 500,
            "l2_regularization": 5.0,
        },
        period="index",
    ),
    "random_forest": Config(
        "random_forest",
        params={"min_samples_leaf": 100, "max_depth": 10, "max_features": "sqrt"},
        period="index",
    ),
}
DEFAULT_CONFIG = CONFIGS["random_forest"]


@dataclass
class CadenceResult:
    cadence: str
    config_label: str
    backtest: BacktestResult


def run_cadences(
    frame: pd.DataFrame,
    cadences: Sequence[str],
    config: Config = DEFAULT_CONFIG,
    step: Callable[[str], None] | None = None,
    n_jobs: int = 2,
) -> list[CadenceResult]:
    results = []
    for cadence in cadences:
        every = None if cadence == "never" else int(cadence)
        backtest = rolling_backtest(frame, config.build, retrain_every=every, n_jobs=n_jobs)
        results.append(CadenceResult(cadence, config.label, backtest))
        if step:
            step(f"retrain every {cadence}")
    return results


def cadence_table(results: Sequence[CadenceResult]) -> pd.DataFrame:
    rows = []
    for r in results:
        summary = r.backtest.summary()
        rows.append(
            {
                "retrain_every": r.cadence,
                "fits": int(r.backtest.per_period["retrained"].sum()),
                "backtest_monthly_roc_auc": summary["backtest_monthly_roc_auc"],
                "backtest_roc_auc": summary["backtest_roc_auc"],
                "backtest_pr_auc": summary["backtest_pr_auc"],
                "backtest_lift_top_decile": summary["backtest_lift_top_decile"],
                "brier": summary["brier"],
                "mean_score": summary["backtest_mean_score"],
                "positive_rate": summary["backtest_positive_rate"],
            }
        )
    return pd.DataFrame(rows)
