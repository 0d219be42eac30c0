"""Model selection: a time-boxed screen on a few backtest origins, then full evaluation of the
best configuration of each candidate family; the winner has the best per-month backtest AUC."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.candidates import Config, search_space
from trainer.evaluation import (
    SELECTION_METRIC,
    BacktestResult,
    backtest_origins,
    random_cv_auc,
    rolling_backtest,
)

SCREEN_ORIGINS = 6
Step = Callable[[str], None]


@dataclass
class ScreenResult:
    config: Config
    monthly_roc_auc: float
    pooled_roc_auc: float
    seconds: float


# The CLI's columns for every candidate (protocol A, then protocol B); the model card's
# CandidateMetrics holds these and the rest of the backtest summary.
CANDIDATE_METRICS: tuple[str, ...] = (
    "random_cv_roc_auc",
    SELECTION_METRIC,
    "backtest_roc_auc",
    "backtest_pr_auc",
    "backtest_lift_top_decile",
    "brier",
)


@dataclass
class CandidateEvaluation:
    config: Config
    backtest: BacktestResult
    random_cv_roc_auc: float

    def metrics(self) -> dict[str, float]:
        return {"random_cv_roc_auc": self.random_cv_roc_auc, **self.backtest.summary()}


@dataclass
class Selection:
    screen: list[ScreenResult]
    candidates: dict[str, CandidateEvaluation]
    selected: str
    skipped_configs: int

    @property
    def best(self) -> CandidateEvaluation:
        return self.candidates[self.selected]


def screening_origins(frame: pd.DataFrame, count: int = SCREEN_ORIGINS) -> list[str]:
    """`count` origins spread evenly over the backtest, always including the last one."""
    origins = backtest_origins(frame)
    if len(origins) <= count:
        return origins
    index = np.unique(np.linspace(0, len(origins) - 1, count).round().astype(int))
    return [origins[i] for i in index]


def screen(
    frame: pd.DataFrame,
    configs: list[Config],
    time_budget: float,
    step: Step | None = None,
    n_jobs: int = 2,
) -> tuple[list[ScreenResult], int]:
    """Backtest each config on the screening origins until the time budget is spent.

    The first config of each candidate family always runs, so every family has a finalist.
    """
    origins = screening_origins(frame)
    started = time.monotonic()
    results: list[ScreenResult] = []
    skipped = 0
    seen: set[str] = set()
    for config in configs:
        over = time.monotonic() - started > time_budget
        if over and config.candidate in seen:
            skipped += 1
            continue
        seen.add(config.candidate)
        t0 = time.monotonic()
        result = rolling_backtest(frame, config.build, origins=origins, n_jobs=n_jobs)
        results.append(
            ScreenResult(
                config,
                result.monthly_roc_auc,
                result.summary()["backtest_roc_auc"],
                time.monotonic() - t0,
            )
        )
        if step:
            step(config.label)
    return results, skipped


def best_per_family(results: list[ScreenResult]) -> dict[str, Config]:
    best: dict[str, ScreenResult] = {}
    for r in results:
        current = best.get(r.config.candidate)
        if current is None or r.monthly_roc_auc > current.monthly_roc_auc:
            best[r.config.candidate] = r
    return {name: r.config for name, r in best.items()}


def select_model(
    frame: pd.DataFrame,
    fast: bool = False,
    time_budget: float = 45.0,
    step: Step | None = None,
    n_jobs: int = 2,
) -> Selection:
    configs = search_space(fast=fast)
    results, skipped = screen(frame, configs, time_budget, step, n_jobs)
    evaluations: dict[str, CandidateEvaluation] = {}
    # The fast path (tests, demos) scores the finalists on the screening origins only.
    origins = screening_origins(frame) if fast else None
    for name, config in best_per_family(results).items():
        backtest = rolling_backtest(frame, config.build, origins=origins, n_jobs=n_jobs)
        if step:
            step(f"{name}: full backtest")
        cv = random_cv_auc(frame, config.build, folds=3 if fast else 5, n_jobs=n_jobs)
        if step:
            step(f"{name}: random CV")
        evaluations[name] = CandidateEvaluation(config, backtest, cv)
    selected = max(evaluations, key=lambda n: evaluations[n].backtest.monthly_roc_auc)
    return Selection(results, evaluations, selected, skipped)


def screen_table(results: list[ScreenResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "candidate": r.config.candidate,
                "pdays": r.config.pdays,
                "day_month": r.config.calendar,
                "period": r.config.period,
                "params": ", ".join(f"{k}={v}" for k, v in sorted(r.config.params.items())),
                "screen_monthly_roc_auc": r.monthly_roc_auc,
                "screen_pooled_roc_auc": r.pooled_roc_auc,
                "seconds": r.seconds,
            }
            for r in results
        ]
    )


def feature_comparisons(selection: Selection) -> dict[str, dict[str, float]]:
    """Screen results for the feature variants, per candidate family (same origins, same params).

    Keys: '<candidate>: pdays' -> {engineer, drop, raw};
    '<candidate>: day/month' -> {with, without};
    '<candidate>: period' -> {none, index|onehot} (same pdays/day-month/hyperparameters).
    """
    out: dict[str, dict[str, float]] = {}
    base: dict[str, dict[str, Any]] = {}
    for r in selection.screen:
        base.setdefault(r.config.candidate, r.config.params)
    without_period = {
        (r.config.candidate, r.config.pdays, r.config.calendar, str(r.config.params)): r
        for r in selection.screen
        if r.config.period == "none"
    }
    for r in selection.screen:
        c = r.config
        if c.period != "none":
            twin = without_period.get((c.candidate, c.pdays, c.calendar, str(c.params)))
            if twin is not None:
                key = f"{c.candidate}: period"
                out.setdefault(key, {}).update(
                    {"none": twin.monthly_roc_auc, c.period: r.monthly_roc_auc}
                )
            continue
        if c.params != base[c.candidate]:
            continue
        if not c.calendar:
            out.setdefault(f"{c.candidate}: pdays", {})[c.pdays] = r.monthly_roc_auc
        if c.pdays == "engineer":
            key = "with" if c.calendar else "without"
            out.setdefault(f"{c.candidate}: day/month", {})[key] = r.monthly_roc_auc
    return {k: v for k, v in out.items() if len(v) > 1}
