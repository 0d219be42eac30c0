"""Online recalibration: refit the served model's score calibration on its recent outcomes.

Between retrains the pipeline keeps ranking well while the base rate drifts (on the bank data
the subscription rate moves from ~6% to ~50%), so the scores lag the observed rate. Platt
scaling on the logit of the *raw* pipeline score fixes the level without touching the pipeline:
`calibrated = sigmoid(slope * logit(raw) + intercept)` (registry.calibration).

The labelled predictions carry the *served* score, already calibrated by the served version's
calibration (a, b): logit(served) = a * logit(raw) + b. Inverting it gives the raw logit exactly
(up to the clipping of scores at 0 and 1), so the new calibration is always stated against the
raw pipeline and never stacks on top of an older one.

The result is published as a new, signed model version, so every scorer hot-loads it like any
other model and a rollback is `callscore models promote`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq
from sklearn.linear_model import LogisticRegression

from core.errors import CallscoreError
from core.settings import Settings
from feedback.label_columns import LabelColumns
from registry.artifact import ArtifactMetadata, ModelArtifact, dump_artifact
from registry.calibration import logit
from registry.keys import trusted_keys
from registry.model_topic import (
    load_champion,
    next_version,
    publish_manifest,
    read_model_records,
)
from registry.signing import build_manifest
from schemas import Distribution, ModelManifest, ScoreCalibration, TierCutPoints

log = logging.getLogger(__name__)

# Fewer labelled rows than this give a calibration noisier than the drift it corrects.
MIN_CALIBRATION_ROWS = 50
# Essentially unregularised: Platt scaling on one feature has nothing to shrink towards.
PLATT_C = 1e6
# Bracket of the intercept-only fallback's root search, in logit units (e^30 ~ 1e13).
SHIFT_BOUND = 30.0


class NotEnoughOutcomes(CallscoreError):
    """The labelled outcomes cannot support a calibration (too few, or one class only)."""


def raw_logits(served: np.ndarray, calibration: ScoreCalibration | None) -> np.ndarray:
    """logit(raw pipeline score) from a served score, undoing the served calibration."""
    z = logit(served)
    if calibration is None:
        return z
    return (z - calibration.intercept) / calibration.slope


def fit_calibration(
    scores: ArrayLike,
    labels: ArrayLike,
    previous: ScoreCalibration | None,
    fallback: list[str] | None = None,
) -> ScoreCalibration:
    """Platt scaling of the raw pipeline score, fitted on served scores and their outcomes.

    `scores` are served scores, i.e. already mapped through `previous`. If the fitted slope is
    not positive (a model that no longer ranks), the ranking is kept and only the level moves:
    the previous slope with the maximum-likelihood intercept; a note is appended to `fallback`.
    """
    served = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if len(served) != len(y):
        raise ValueError(f"{len(served)} scores but {len(y)} labels")
    if len(y) < MIN_CALIBRATION_ROWS:
        raise NotEnoughOutcomes(
            f"{len(y)} labelled outcomes; a calibration needs at least {MIN_CALIBRATION_ROWS}"
        )
    positives = int(y.sum())
    if positives in (0, len(y)):
        only = "subscribed" if positives else "not subscribed"
        raise NotEnoughOutcomes(
            f"all {len(y)} labelled outcomes are '{only}': a calibration needs both classes"
        )
    x = raw_logits(served, previous)
    model = LogisticRegression(C=PLATT_C, max_iter=1000).fit(x.reshape(-1, 1), y)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if slope > 0 and np.isfinite(slope) and np.isfinite(intercept):
        return ScoreCalibration(slope=slope, intercept=intercept, outcomes=len(y))
    kept = previous.slope if previous is not None else 1.0
    base = previous.intercept if previous is not None else 0.0
    shift = _intercept_only(kept * x + base, y)
    note = (
        f"fitted slope {slope:.3g} is not positive: kept slope {kept:.3g}, "
        f"shifted the intercept by {shift:+.3f}"
    )
    log.warning("recalibration: %s", note)
    if fallback is not None:
        fallback.append(note)
    return ScoreCalibration(slope=kept, intercept=base + shift, outcomes=len(y))


def _intercept_only(z: np.ndarray, y: np.ndarray) -> float:
    """The maximum-likelihood shift b of sigmoid(z + b): the mean score equals the rate."""
    rate = float(y.mean())

    def excess(b: float) -> float:
        return float(np.mean(1.0 / (1.0 + np.exp(-(z + b))))) - rate

    return float(brentq(excess, -SHIFT_BOUND, SHIFT_BOUND))


def remap_scores(
    served: ArrayLike,
    old: ScoreCalibration | None,
    new: ScoreCalibration,
) -> np.ndarray:
    """Scores of the old calibration expressed in the new one (monotone increasing)."""
    z = raw_logits(np.asarray(served, dtype=float), old)
    return np.asarray(1.0 / (1.0 + np.exp(-(new.slope * z + new.intercept))), dtype=float)


def recalibrated_artifact(
    artifact: ModelArtifact, calibration: ScoreCalibration, version: int, reason: str
) -> ModelArtifact:
    """The same fitted pipeline under a new calibration, as a new version.

    Every field stated in score space (tier cut points, validation quantiles, the score's drift
    bins) goes through the same monotone map as the scores, so percentiles and tiers keep their
    meaning. The pipeline, its training window, metrics and labels carry over unchanged.
    """
    meta = artifact.metadata
    old = meta.calibration

    def remap(values: Sequence[float]) -> list[float]:
        return [float(v) for v in remap_scores(values, old, calibration)]

    high, medium = remap([meta.tier_cut_points.high, meta.tier_cut_points.medium])
    baseline = meta.drift_baseline
    if baseline is not None and baseline.score.edges is not None:
        score = Distribution(
            edges=remap(baseline.score.edges), proportions=baseline.score.proportions
        )
        baseline = baseline.model_copy(update={"score": score})
    metadata = ArtifactMetadata.model_validate(
        {
            **meta.model_dump(),
            "version": version,
            "created_at": datetime.now(UTC),
            "reason": reason,
            "calibration": calibration,
            "tier_cut_points": TierCutPoints(high=high, medium=medium),
            "validation_scores": remap(meta.validation_scores),
            "drift_baseline": baseline,
        }
    )
    return ModelArtifact(artifact.pipeline, metadata)


@dataclass(frozen=True)
class Recalibration:
    """What a recalibration did: the published manifest, or None and why not."""

    manifest: ModelManifest | None
    message: str


def run_recalibration(settings: Settings, labels: LabelColumns) -> Recalibration:
    """Fit on the served version's latest outcomes and publish the result as a new version."""
    records = read_model_records(settings)
    champion = load_champion(settings, records)
    if champion is None:
        raise CallscoreError(
            f"no model '{settings.model_name}' on '{settings.topic_models}' to recalibrate"
        )
    served, artifact = champion
    # One row per event, by the time of its call: the latest recalibration_window of them.
    window = labels.of_version(served.version).labelled.iloc[-settings.recalibration_window :]
    scores = window["score"].to_numpy(dtype=float)
    subscribed = window["subscribed"].to_numpy(dtype=bool)
    fallback: list[str] = []
    try:
        calibration = fit_calibration(scores, subscribed, artifact.metadata.calibration, fallback)
    except NotEnoughOutcomes as exc:
        message = f"v{served.version} not recalibrated: {exc}"
        log.info("recalibration: %s", message)
        return Recalibration(None, message)
    after = remap_scores(scores, artifact.metadata.calibration, calibration)
    reason = (
        f"recalibration of v{served.version} on {len(window)} outcomes: mean score "
        f"{scores.mean():.3f} -> {after.mean():.3f} vs observed {subscribed.mean():.3f}"
    )
    if fallback:
        reason = f"{reason} ({fallback[0]})"
    version = next_version(records, settings.model_name, trusted_keys(settings))
    derived = recalibrated_artifact(artifact, calibration, version, reason)
    built = build_manifest(dump_artifact(derived), derived.metadata, settings)
    manifest = publish_manifest(settings, built)
    message = f"published {manifest.model_name} v{manifest.version}: {reason}"
    if settings.pinned_model_version is not None:
        message += f" (scorers stay on pinned v{settings.pinned_model_version})"
    log.info("recalibration: %s", message)
    return Recalibration(manifest, message)


def recalibrate(settings: Settings, labels: LabelColumns) -> ModelManifest | None:
    """The published manifest, or None (reason logged) when the outcomes are not enough."""
    return run_recalibration(settings, labels).manifest
