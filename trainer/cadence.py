"""`callscore backtest`: one pipeline, several retraining cadences, same scored months.

Answers "how often must it be retrained?" with data: a model refitted every N months (or never
after the first origin) scores each later month; compare per-month and pooled metrics.

pandas and the backtest are imported where they run: the CLI reads CADENCES while it builds
its parser, and `callscore --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainer.candidates import REFERENCE_CONFIGS, REFERENCE_SELECTED, Config

if TYPE_CHECKING:
    import pandas as pd

    from trainer.evaluation import BacktestResult

NEVER = "never"  # fit once, at the first origin
CADENCES: tuple[str, ...] = ("1", "2", "3", "6", NEVER)  # months between refits
DEFAULT_CONFIG = REFERENCE_CONFIGS[REFERENCE_SELECTED]


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
    from trainer.evaluation import rolling_backtest

    results = []
    for cadence in cadences:
        every = None if cadence == NEVER else int(cadence)
        backtest = rolling_backtest(frame, config.build, retrain_every=every, n_jobs=n_jobs)
        results.append(CadenceResult(cadence, config.label, backtest))
        if step:
            step(f"retrain every {cadence}")
    return results


def cadence_table(results: Sequence[CadenceResult]) -> pd.DataFrame:
    import pandas as pd

    from trainer.evaluation import SELECTION_METRIC

    rows = []
    for r in results:
        summary = r.backtest.summary()
        rows.append(
            {
                "retrain_every": r.cadence,
                "fits": int(r.backtest.per_period["retrained"].sum()),
                SELECTION_METRIC: summary[SELECTION_METRIC],
                "backtest_roc_auc": summary["backtest_roc_auc"],
                "backtest_pr_auc": summary["backtest_pr_auc"],
                "backtest_lift_top_decile": summary["backtest_lift_top_decile"],
                "brier": summary["brier"],
                "mean_score": summary["backtest_mean_score"],
                "positive_rate": summary["backtest_positive_rate"],
            }
        )
    return pd.DataFrame(rows)
