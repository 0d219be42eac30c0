"""Honest evaluation: metrics, random CV (protocol A) and the rolling monthly backtest (B).

Protocol B: for each contact period once at least `min_train_rows` earlier rows exist, train on
all earlier periods and score that period. The selection metric is the row-weighted mean of the
per-period ROC-AUC; pooled metrics over every scored row are reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from schemas import FEATURES
from trainer.data import labels
from trainer.workers import watch_parent

MIN_TRAIN_ROWS = 12_000
SMALL_DATA_FRACTION = 0.3  # data sets below 40,000 rows (synthetic tests) start earlier
# The model selection metric: the row-weighted mean of per-month ROC-AUC in the backtest.
SELECTION_METRIC = "backtest_monthly_roc_auc"


def default_min_train_rows(rows: int) -> int:
    """12,000 rows on bank-full; 30% of the rows on smaller (test) data sets."""
    return min(MIN_TRAIN_ROWS, max(100, int(rows * SMALL_DATA_FRACTION)))


def lift_top_fraction(y: np.ndarray, scores: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate in the top `fraction` of scores divided by the overall positive rate."""
    n = max(1, round(len(scores) * fraction))
    top = np.argsort(-scores, kind="stable")[:n]
    base = float(np.mean(y))
    return float(np.mean(y[top]) / base) if base > 0 else float("nan")


def score_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "pr_auc": float(average_precision_score(y, scores)),
        "lift_top_decile": lift_top_fraction(y, scores),
        "brier": float(brier_score_loss(y, scores)),
        "mean_score": float(np.mean(scores)),
        "positive_rate": float(np.mean(y)),
    }


def backtest_origins(frame: pd.DataFrame, min_train_rows: int | None = None) -> list[str]:
    """Periods (in file order) preceded by at least `min_train_rows` rows."""
    if min_train_rows is None:
        min_train_rows = default_min_train_rows(len(frame))
    sizes = frame.groupby("period", sort=False).size()
    earlier = sizes.cumsum() - sizes
    return [str(p) for p, n in earlier.items() if n >= min_train_rows]


@dataclass
class BacktestResult:
    per_period: pd.DataFrame  # period, rows, positives, roc_auc, mean_score, positive_rate, ...
    y: np.ndarray
    scores: np.ndarray
    periods: np.ndarray

    @property
    def monthly_roc_auc(self) -> float:
        """Row-weighted mean of per-period ROC-AUC (periods with one class are skipped)."""
        table = self.per_period.dropna(subset=["roc_auc"])
        if table.empty:
            return float("nan")
        return float(np.average(table["roc_auc"], weights=table["rows"]))

    def summary(self) -> dict[str, float]:
        pooled = score_metrics(self.y, self.scores)
        return {
            SELECTION_METRIC: self.monthly_roc_auc,
            "backtest_roc_auc": pooled["roc_auc"],
            "backtest_pr_auc": pooled["pr_auc"],
            "backtest_lift_top_decile": pooled["lift_top_decile"],
            "brier": pooled["brier"],
            "backtest_mean_score": pooled["mean_score"],
            "backtest_positive_rate": pooled["positive_rate"],
            "backtest_rows": float(len(self.y)),
        }


def serving_view(frame: pd.DataFrame) -> pd.DataFrame:
    """What a served model receives: the contract's FEATURES only (no period, no label)."""
    return frame[list(FEATURES)]


def _fit_and_score(
    frame: pd.DataFrame,
    y_all: np.ndarray,
    train: np.ndarray,
    tests: list[tuple[str, np.ndarray]],
    make_model: Callable[[], Any],
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from threadpoolctl import threadpool_limits

    # One thread per fit: the backtest parallelises over fits; OpenMP threads on small fits
    # (gradient boosting) mostly spin. The fit sees the time context (`period`); the scored rows
    # get only the contract's FEATURES, exactly as serving scores them.
    with threadpool_limits(limits=1):
        model = make_model()
        model.fit(frame.iloc[train], y_all[train])
        return [
            (period, y_all[test], model.predict_proba(serving_view(frame.iloc[test]))[:, 1])
            for period, test in tests
        ]


def rolling_backtest(
    frame: pd.DataFrame,
    make_model: Callable[[], Any],
    origins: Sequence[str] | None = None,
    retrain_every: int | None = 1,
    min_train_rows: int | None = None,
    n_jobs: int = 2,
    window_periods: int | None = None,
) -> BacktestResult:
    """Score each origin period with a model trained on everything before it, or on its
    `window_periods` periods before it (a trailing window; None: expanding).

    retrain_every=k refits at every k-th origin (None: fit once, at the first origin);
    `origins` restricts which periods are scored (screening) without changing the training data.
    Training blocks run in parallel (joblib processes); `make_model` must be picklable.
    """
    from joblib import Parallel, delayed

    all_origins = backtest_origins(frame, min_train_rows)
    wanted = set(origins) if origins is not None else set(all_origins)
    period_values = frame["period"].to_numpy()
    order = {p: i for i, p in enumerate(dict.fromkeys(period_values))}
    position = np.array([order[p] for p in period_values])
    y_all = labels(frame)
    blocks: list[tuple[np.ndarray, list[tuple[str, np.ndarray]]]] = []
    for step, period in enumerate(all_origins):
        if period not in wanted:
            continue
        due = not blocks or (retrain_every is not None and step % retrain_every == 0)
        if due:
            first = 0 if window_periods is None else order[period] - window_periods
            blocks.append(((position < order[period]) & (position >= first), []))
        blocks[-1][1].append((period, period_values == period))
    jobs = (
        delayed(_fit_and_score)(frame, y_all, train, tests, make_model) for train, tests in blocks
    )
    if n_jobs == 1 or len(blocks) == 1:
        outputs = [
            _fit_and_score(frame, y_all, train, tests, make_model) for train, tests in blocks
        ]
    else:
        watch_parent()
        outputs = Parallel(n_jobs=n_jobs)(jobs)
    rows, ys, scores, periods = [], [], [], []
    for block_index, output in enumerate(outputs):
        for i, (period, y, p) in enumerate(output):
            auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
            rows.append(
                {
                    "period": period,
                    "rows": len(y),
                    "positives": int(y.sum()),
                    "roc_auc": auc,
                    "mean_score": float(p.mean()),
                    "positive_rate": float(y.mean()),
                    "trained_rows": int(blocks[block_index][0].sum()),
                    "retrained": i == 0,
                }
            )
            ys.append(y)
            scores.append(p)
            periods.append(np.full(len(y), period))
    return BacktestResult(
        pd.DataFrame(rows), np.concatenate(ys), np.concatenate(scores), np.concatenate(periods)
    )


def random_cv_auc(
    frame: pd.DataFrame,
    make_model: Callable[[], Any],
    folds: int = 5,
    n_jobs: int = 2,
) -> float:
    """Protocol A: stratified k-fold with shuffling, mean ROC-AUC (overstates on drifting data)."""
    from joblib import Parallel, delayed

    y = labels(frame)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    watch_parent()
    outputs = Parallel(n_jobs=n_jobs)(
        delayed(_fit_and_score)(frame, y, train, [("fold", test)], make_model)
        for train, test in splitter.split(frame, y)
    )
    return float(np.mean([roc_auc_score(t, p) for ((_, t, p),) in outputs]))
