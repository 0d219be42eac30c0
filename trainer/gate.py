"""The champion/challenger gate: publish a new model only if it is not worse on the holdout.

Both models are scored on the same rows, the newest labelled ones the champion never trained on:
the holdout periods after the champion's training window, and the candidate is refused only when
it is worse beyond noise: the paired bootstrap interval of its AUC difference lies wholly below
zero (`feedback.significance`). Only when those rows are too few (or one class) does the gate
fall back to the champion's recorded holdout AUC, with a fixed tolerance.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import roc_auc_score

from core.settings import Settings
from feedback.significance import AucDifference, paired_auc_difference
from registry.artifact import ModelArtifact
from schemas import ModelManifest, TrainingWindow
from trainer.evaluation import score_metrics
from trainer.final import HOLDOUT_METRIC_PREFIX, FinalModel

# Fewer rows than this in the newest window give an AUC too noisy to decide on (its standard
# error is about 0.03-0.05 at 200 rows with a 10-20% positive rate).
NEWEST_WINDOW_MIN_ROWS = 200
GATE_METRIC_PREFIX = "gate_roc_auc_"  # in a published version's metrics

# Which comparison decided:
# - no_champion: nothing published yet;
# - newest_window: candidate (fitted before the holdout) and champion live, on the holdout rows of
#   the periods after the champion's training window;
# - recorded_holdout: the champion was trained on exactly the candidate's data, so both recorded
#   an out-of-sample AUC on the same holdout: its recorded holdout AUC;
# - live_holdout: the champion never saw the holdout but the window is too small: its live AUC
#   on the whole holdout;
# - too_few_new_rows: the champion saw part of the holdout and the rows newer than its data are
#   too few to compare both on them: no comparison is fair, so the champion stays (a replay showed
#   the recorded-AUC shortcut comparing two different holdouts: 0.547 vs 0.689).
GateRule = Literal[
    "no_champion", "newest_window", "recorded_holdout", "live_holdout", "too_few_new_rows"
]


class GateDecision(BaseModel):
    """The decision as the model card (metrics.json) records it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    publish: bool
    reason: str
    candidate_roc_auc: float
    champion_version: int | None = None
    champion_roc_auc: float | None = None
    tolerance: float = 0.0
    forced: bool = False
    champion_saw_holdout: bool = False
    champion_live_roc_auc: float | None = None  # in-sample when champion_saw_holdout
    # Cards written before the newest-window rule have no rule: they used the recorded holdout.
    rule: GateRule = "recorded_holdout"
    window_periods: list[str] = []  # the newest_window rule's periods
    window_rows: int = 0
    # Candidate minus champion on the same rows (newest_window, live_holdout): the decision's.
    difference: AucDifference | None = None

    def metrics(self) -> dict[str, float]:
        """The difference the decision rests on, for the version's manifest (`models list`)."""
        d = self.difference
        if d is None:
            return {}
        return {
            GATE_METRIC_PREFIX + "difference": d.value,
            GATE_METRIC_PREFIX + "difference_low": d.low,
            GATE_METRIC_PREFIX + "difference_high": d.high,
        }


class GateSkipped(BaseModel):
    """No gate ran because publication was off: the card only says that nothing was published."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    publish: Literal[False] = False
    reason: str = "--no-publish"


def decide(
    candidate_auc: float,
    champion_auc: float | None,
    tolerance: float,
    force: bool = False,
    champion_version: int | None = None,
    champion_saw_holdout: bool = False,
    champion_live_roc_auc: float | None = None,
    rule: GateRule | None = None,
    window_periods: list[str] | None = None,
    window_rows: int = 0,
    difference: AucDifference | None = None,
) -> GateDecision:
    """Publish unless the candidate is worse than the champion: beyond the interval of their
    difference when both were scored on the same rows (`difference`), else by more than
    `tolerance`.

    `rule` defaults to no_champion without a champion AUC, else recorded_holdout.
    """
    if rule is None:
        rule = "no_champion" if champion_auc is None else "recorded_holdout"
    where = {
        "newest_window": f" on the {window_rows} newest labelled rows "
        f"({', '.join(window_periods or [])})",
        "recorded_holdout": " (champion: its recorded holdout AUC)",
        "live_holdout": " (champion: live on the holdout)",
    }.get(rule, "")

    def decision(publish: bool, reason: str) -> GateDecision:
        return GateDecision(
            publish=publish,
            reason=reason,
            candidate_roc_auc=candidate_auc,
            champion_version=champion_version,
            champion_roc_auc=champion_auc,
            tolerance=tolerance,
            forced=force,
            champion_saw_holdout=champion_saw_holdout,
            champion_live_roc_auc=champion_live_roc_auc,
            rule=rule,
            window_periods=window_periods or [],
            window_rows=window_rows,
            difference=difference,
        )

    if champion_auc is None:
        return decision(True, "no published model yet")
    if difference is not None:
        reason = (
            f"candidate holdout AUC {candidate_auc:.4f} vs champion v{champion_version} "
            f"{champion_auc:.4f}{where}: {difference.text()}"
        )
        if not difference.worse_beyond_interval:
            return decision(True, f"{reason}: not worse beyond the interval")
        if force:
            return decision(
                True, f"{reason}: worse beyond the interval; published anyway (--force)"
            )
        return decision(False, f"{reason}: worse beyond the interval")
    delta = candidate_auc - champion_auc
    if delta >= -tolerance:
        reason = f"candidate holdout AUC {candidate_auc:.4f} vs champion {champion_auc:.4f}"
        return decision(True, f"{reason}{where}: not worse beyond {tolerance}")
    reason = (
        f"candidate holdout AUC {candidate_auc:.4f} is {-delta:.4f} below champion "
        f"v{champion_version} ({champion_auc:.4f}){where}, beyond tolerance {tolerance}"
    )
    if force:
        return decision(True, f"{reason}; published anyway (--force)")
    return decision(False, reason)


def newest_window(final: FinalModel, champion_end: str) -> np.ndarray:
    """Mask of the holdout rows in periods after the champion's training window."""
    return np.asarray(final.holdout["period"].to_numpy() > champion_end, dtype=bool)


def _window_is_usable(y: np.ndarray) -> bool:
    return len(y) >= NEWEST_WINDOW_MIN_ROWS and 0 < int(y.sum()) < len(y)


def gate(
    settings: Settings,
    champion: tuple[ModelManifest, ModelArtifact] | None,
    final: FinalModel,
    force: bool,
) -> GateDecision:
    """Candidate (fitted before the holdout) vs the published model, on the same rows.

    The rows are the holdout periods after the champion's training window: fresh outcomes the
    champion never saw, scored by the champion live and by the candidate's configuration fitted
    on every row before them. (The holdout pipeline is reused when it was fitted on exactly those
    rows; when the holdout reaches back into the champion's window, it saw less data than the
    champion, and a gate on it refused every retrain of a replay: see docs/feedback-loop.md.)
    Without such a window (fewer than NEWEST_WINDOW_MIN_ROWS rows, or one class) the champion's
    live score on the holdout would be in-sample, so the decision uses the out-of-sample holdout
    AUC recorded in its manifest (the live score is still reported).
    """
    candidate_auc = score_metrics(final.holdout_y, final.holdout_scores)["roc_auc"]
    if champion is None:
        return decide(candidate_auc, None, settings.champion_tolerance, force)
    manifest, artifact = champion
    live_scores = artifact.predict(final.holdout)
    live = score_metrics(final.holdout_y, live_scores)["roc_auc"]
    holdout_start = str(final.holdout["period"].iloc[0])
    saw_holdout = manifest.training_window.end >= holdout_start
    against = partial(
        decide,
        tolerance=settings.champion_tolerance,
        force=force,
        champion_version=manifest.version,
        champion_saw_holdout=saw_holdout,
        champion_live_roc_auc=live,
    )
    window = newest_window(final, manifest.training_window.end)
    y = final.holdout_y[window]
    if _window_is_usable(y):
        rows = final.holdout.loc[window]
        fitted_before_window = str(final.holdout["period"].iloc[0]) == rows["period"].min()
        candidate = (
            final.holdout_scores[window]
            if fitted_before_window
            else final.scores_fitted_before(rows)
        )
        return against(
            roc_auc(y, candidate),
            roc_auc(y, live_scores[window]),
            rule="newest_window",
            window_periods=sorted(set(final.holdout["period"].to_numpy()[window])),
            window_rows=int(window.sum()),
            difference=_difference(settings, y, candidate, live_scores[window]),
        )
    periods = final.frame["period"]
    same_data = manifest.training_window == TrainingWindow(
        start=str(periods.iloc[0]), end=str(periods.iloc[-1]), rows=len(final.frame)
    )
    if saw_holdout and not same_data:
        return _too_few_new_rows(settings, manifest, candidate_auc, live, y, force)
    recorded = manifest.metrics.get(f"{HOLDOUT_METRIC_PREFIX}roc_auc")
    if saw_holdout and recorded is not None:
        return against(candidate_auc, recorded, rule="recorded_holdout")
    return against(
        candidate_auc,
        live,
        rule="live_holdout",
        difference=_difference(settings, final.holdout_y, final.holdout_scores, live_scores),
    )


def _difference(
    settings: Settings, y: np.ndarray, candidate: np.ndarray, champion: np.ndarray
) -> AucDifference | None:
    return paired_auc_difference(
        y, candidate, champion, settings.gate_bootstrap_resamples, settings.gate_confidence
    )


def _too_few_new_rows(
    settings: Settings,
    champion: ModelManifest,
    candidate_auc: float,
    live: float,
    window_y: np.ndarray,
    force: bool,
) -> GateDecision:
    reason = (
        f"only {len(window_y)} labelled rows ({int(window_y.sum())} subscribed) are newer than "
        f"champion v{champion.version}'s data; comparing both on the same rows needs "
        f"{NEWEST_WINDOW_MIN_ROWS} with both classes: keeping v{champion.version}"
    )
    return GateDecision(
        publish=force,
        reason=f"{reason}; published anyway (--force)" if force else reason,
        candidate_roc_auc=candidate_auc,
        champion_version=champion.version,
        tolerance=settings.champion_tolerance,
        forced=force,
        champion_saw_holdout=True,
        champion_live_roc_auc=live,
        rule="too_few_new_rows",
        window_rows=len(window_y),
    )


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(y, scores))
