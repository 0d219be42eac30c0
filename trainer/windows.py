"""`callscore backtest --windows`: how many months a retrain should learn from.

One pipeline, refitted every month (the rolling backtest), on everything before each month
(expanding) or on its trailing N months only; every window scores the same months. The data's
base rate drifts from ~6% to ~50%, so an older month may teach the wrong rate: a trailing window
trades rows for recency. Compared per month (ROC-AUC, and the calibration gap |mean score -
observed rate|) and pooled; the noise of a per-month difference is its spread over the months.

pandas and the backtest are imported where they run: the CLI reads WINDOWS while it builds its
parser, and `callscore --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainer.cadence import DEFAULT_CONFIG
from trainer.candidates import Config

if TYPE_CHECKING:
    import pandas as pd

    from trainer.evaluation import BacktestResult

EXPANDING = "expanding"
WINDOWS: tuple[str, ...] = (EXPANDING, "6", "12", "18")  # months a retrain learns from


@dataclass
class WindowResult:
    window: str
    config_label: str
    backtest: BacktestResult


def window_periods(window: str) -> int | None:
    return None if window == EXPANDING else int(window)


def run_windows(
    frame: pd.DataFrame,
    windows: Sequence[str],
    config: Config = DEFAULT_CONFIG,
    step: Callable[[str], None] | None = None,
    n_jobs: int = 2,
) -> list[WindowResult]:
    from trainer.evaluation import rolling_backtest

    results = []
    for window in windows:
        backtest = rolling_backtest(
            frame, config.build, n_jobs=n_jobs, window_periods=window_periods(window)
        )
        results.append(WindowResult(window, config.label, backtest))
        if step:
            step(f"window {window}")
    return results


def calibration_gap(per_period: pd.DataFrame) -> float:
    """Row-weighted mean over the months of |mean score - observed rate|."""
    import numpy as np

    gap = (per_period["mean_score"] - per_period["positive_rate"]).abs()
    return float(np.average(gap, weights=per_period["rows"]))


def window_table(results: Sequence[WindowResult]) -> pd.DataFrame:
    """One row per window: per-month and pooled metrics, and the per-month ROC-AUC difference
    to the expanding window with its standard error over the months."""
    import numpy as np
    import pandas as pd

    from trainer.evaluation import SELECTION_METRIC

    base = next((r for r in results if r.window == EXPANDING), None)
    rows = []
    for r in results:
        summary = r.backtest.summary()
        per = r.backtest.per_period
        diff_mean = diff_se = float("nan")
        if base is not None and r is not base:
            both = per.merge(base.backtest.per_period, on="period", suffixes=("", "_base"))
            diffs = (both["roc_auc"] - both["roc_auc_base"]).dropna()
            if len(diffs) > 1:
                diff_mean = float(diffs.mean())
                diff_se = float(diffs.std(ddof=1) / np.sqrt(len(diffs)))
        rows.append(
            {
                "window_months": r.window,
                "median_trained_rows": int(per["trained_rows"].median()),
                SELECTION_METRIC: summary[SELECTION_METRIC],
                "auc_vs_expanding": diff_mean,
                "auc_vs_expanding_se": diff_se,
                "backtest_roc_auc": summary["backtest_roc_auc"],
                "backtest_lift_top_decile": summary["backtest_lift_top_decile"],
                "brier": summary["brier"],
                "calibration_gap": calibration_gap(per),
            }
        )
    return pd.DataFrame(rows)
