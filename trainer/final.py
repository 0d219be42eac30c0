"""The shipped model: the selected configuration, calibrated, fitted on a time-ordered split.

The latest periods form the holdout: the model fitted before them scores them (holdout metrics,
reliability curve, tier cut points, validation score distribution, champion/challenger gate);
the published model is then refitted on every row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from trainer.candidates import Config
from trainer.data import DataError, labels
from trainer.evaluation import serving_view
from trainer.workers import watch_parent

HOLDOUT_MIN_ROWS = 1000
HOLDOUT_FRACTION = 0.05
# The artifact's flat metrics name holdout metrics with this prefix; the gate reads the
# champion's recorded holdout AUC back from its manifest under the same name.
HOLDOUT_METRIC_PREFIX = "holdout_"


def calibrated(config: Config, n_jobs: int = 1) -> Pipeline:
    """The candidate pipeline wrapped in sigmoid calibration on out-of-fold predictions.

    The folds are shuffled: unshuffled stratified folds are time blocks on this chronological
    data, so each out-of-fold prediction would come from a model that never saw its period
    (with period effects the calibrator then learned an inverted map: holdout AUC 0.30).
    """
    folds = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    watch_parent()  # its n_jobs fits run in loky workers
    model = CalibratedClassifierCV(
        config.build(), method="sigmoid", cv=folds, ensemble=False, n_jobs=n_jobs
    )
    return Pipeline([("calibrated", model)])


def holdout_mask(frame: pd.DataFrame) -> np.ndarray:
    """The trailing periods holding at least max(1000 rows, 5% of rows)."""
    needed = max(HOLDOUT_MIN_ROWS, int(len(frame) * HOLDOUT_FRACTION))
    sizes = frame.groupby("period", sort=False).size()
    chosen: list[str] = []
    total = 0
    for period, size in reversed(list(sizes.items())):
        if total >= needed:
            break
        chosen.append(str(period))
        total += int(size)
    mask = frame["period"].isin(chosen).to_numpy()
    if mask.all():
        raise DataError(f"too few rows ({len(frame)}) for a time-ordered holdout")
    y = labels(frame)
    if y[mask].min() == y[mask].max() or y[~mask].min() == y[~mask].max():
        raise DataError("the holdout or the training part has only one class")
    return mask


@dataclass
class FinalModel:
    holdout_pipeline: Pipeline  # fitted before the holdout periods
    pipeline: Pipeline  # fitted on every row: the artifact
    holdout: pd.DataFrame
    holdout_y: np.ndarray
    holdout_scores: np.ndarray
    train_rows: int
    frame: pd.DataFrame  # every training row, for a surrogate fitted on an earlier cut
    config: Config
    n_jobs: int = 2

    def scores_fitted_before(self, rows: pd.DataFrame) -> np.ndarray:
        """`rows` scored as served by this configuration fitted on every row before their first
        period: the candidate's out-of-sample stand-in on exactly the data another model had."""
        first = rows["period"].min()
        before = self.frame.loc[self.frame["period"] < first]
        model = calibrated(self.config, self.n_jobs).fit(before, labels(before))
        return np.asarray(model.predict_proba(serving_view(rows))[:, 1], dtype=float)


def fit_final(frame: pd.DataFrame, config: Config, n_jobs: int = 2) -> FinalModel:
    mask = holdout_mask(frame)
    y = labels(frame)
    before = calibrated(config, n_jobs).fit(frame.loc[~mask], y[~mask])
    holdout = frame.loc[mask]
    # Scored as served: FEATURES only, so period effects use the latest fitted period.
    scores = before.predict_proba(serving_view(holdout))[:, 1]
    everything = calibrated(config, n_jobs).fit(frame, y)
    return FinalModel(
        before, everything, holdout, y[mask], scores, int((~mask).sum()), frame, config, n_jobs
    )
