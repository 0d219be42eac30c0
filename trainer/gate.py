"""The champion/challenger gate: publish a new model only if it is not worse on the holdout."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from core.settings import Settings
from registry.artifact import ModelArtifact
from schemas import ModelManifest
from trainer.evaluation import score_metrics
from trainer.final import HOLDOUT_METRIC_PREFIX, FinalModel


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
) -> GateDecision:
    """Publish unless the candidate is worse than the champion by more than `tolerance`."""

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
        )

    if champion_auc is None:
        return decision(True, "no published model yet")
    delta = candidate_auc - champion_auc
    if delta >= -tolerance:
        reason = f"candidate holdout AUC {candidate_auc:.4f} vs champion {champion_auc:.4f}"
        return decision(True, f"{reason}: not worse beyond {tolerance}")
    reason = (
        f"candidate holdout AUC {candidate_auc:.4f} is {-delta:.4f} below champion "
        f"v{champion_version} ({champion_auc:.4f}), beyond tolerance {tolerance}"
    )
    if force:
        return decision(True, f"{reason}; published anyway (--force)")
    return decision(False, reason)


def gate(
    settings: Settings,
    champion: tuple[ModelManifest, ModelArtifact] | None,
    final: FinalModel,
    force: bool,
) -> GateDecision:
    """Candidate (fitted before the holdout) vs the published model on the latest holdout.

    When the champion's training window covers the holdout, its live score there is in-sample;
    the decision then uses the out-of-sample holdout AUC recorded in its manifest (the live
    score is still reported).
    """
    candidate_auc = score_metrics(final.holdout_y, final.holdout_scores)["roc_auc"]
    if champion is None:
        return decide(candidate_auc, None, settings.champion_tolerance, force)
    manifest, artifact = champion
    live = score_metrics(final.holdout_y, artifact.predict(final.holdout))["roc_auc"]
    holdout_start = str(final.holdout["period"].iloc[0])
    saw_holdout = manifest.training_window.end >= holdout_start
    recorded = manifest.metrics.get(f"{HOLDOUT_METRIC_PREFIX}roc_auc")
    champion_auc = recorded if saw_holdout and recorded is not None else live
    return decide(
        candidate_auc,
        champion_auc,
        settings.champion_tolerance,
        force,
        champion_version=manifest.version,
        champion_saw_holdout=saw_holdout,
        champion_live_roc_auc=live,
    )
