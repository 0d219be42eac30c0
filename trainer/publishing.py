"""The model topic from the trainer's side: read history, load the champion, gate, publish,
promote an older version, list versions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from callscore.errors import CallscoreError
from callscore.kafka import BrokerUnavailableError
from callscore.settings import Settings
from registry.artifact import ModelArtifact
from registry.manifests import (
    ManifestRecord,
    ManifestRejected,
    ModelTopicReader,
    current_manifest,
    publish_manifest,
    verify_and_load,
)
from schemas import ModelManifest


def read_model_records(settings: Settings, timeout: float = 15.0) -> list[ManifestRecord]:
    """Every record of the model topic; BrokerUnavailableError when the broker does not answer."""
    from confluent_kafka import KafkaException

    try:
        with ModelTopicReader(settings) as reader:
            return reader.read_to_end(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"Kafka at {settings.bootstrap_servers} did not answer: {exc.args[0]}"
        ) from None


def load_champion(
    settings: Settings, records: list[ManifestRecord]
) -> tuple[ModelManifest, ModelArtifact] | None:
    """The currently served model, verified; None when nothing is published yet."""
    manifest = current_manifest(records, settings.model_name, settings.pinned_model_version)
    if manifest is None:
        return None
    try:
        return manifest, verify_and_load(manifest, settings)
    except ManifestRejected as exc:
        raise CallscoreError(
            f"the current model v{manifest.version} on '{settings.topic_models}' failed "
            f"verification ({exc.reason}: {exc.message}); check CALLSCORE_MODEL_SIGNING_KEY"
        ) from None


@dataclass(frozen=True)
class GateDecision:
    publish: bool
    reason: str
    candidate_roc_auc: float
    champion_version: int | None = None
    champion_roc_auc: float | None = None
    tolerance: float = 0.0
    forced: bool = False
    champion_saw_holdout: bool = False
    champion_live_roc_auc: float | None = None  # in-sample when champion_saw_holdout

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    common = {
        "candidate_roc_auc": candidate_auc,
        "champion_version": champion_version,
        "champion_roc_auc": champion_auc,
        "tolerance": tolerance,
        "forced": force,
        "champion_saw_holdout": champion_saw_holdout,
        "champion_live_roc_auc": champion_live_roc_auc,
    }
    if champion_auc is None:
        return GateDecision(True, "no published model yet", **common)  # type: ignore[arg-type]
    delta = candidate_auc - champion_auc
    if delta >= -tolerance:
        reason = f"candidate holdout AUC {candidate_auc:.4f} vs champion {champion_auc:.4f}"
        return GateDecision(True, f"{reason}: not worse beyond {tolerance}", **common)  # type: ignore[arg-type]
    reason = (
        f"candidate holdout AUC {candidate_auc:.4f} is {-delta:.4f} below champion "
        f"v{champion_version} ({champion_auc:.4f}), beyond tolerance {tolerance}"
    )
    if force:
        return GateDecision(True, f"{reason}; published anyway (--force)", **common)  # type: ignore[arg-type]
    return GateDecision(False, reason, **common)  # type: ignore[arg-type]


def promote(settings: Settings, version: int, timeout: float = 15.0) -> ModelManifest:
    """Republish an existing version's signed manifest as the newest record (rollback/forward)."""
    records = read_model_records(settings, timeout)
    matches = [
        r.manifest
        for r in records
        if r.manifest
        and r.manifest.model_name == settings.model_name
        and r.manifest.version == version
    ]
    if not matches:
        known = sorted(
            {
                r.manifest.version
                for r in records
                if r.manifest and r.manifest.model_name == settings.model_name
            }
        )
        raise CallscoreError(
            f"no version {version} of '{settings.model_name}' on '{settings.topic_models}' "
            f"(known: {', '.join(map(str, known)) or 'none'})"
        )
    original = matches[-1]
    try:
        verify_and_load(original, settings)
    except ManifestRejected as exc:
        raise CallscoreError(f"version {version} failed verification ({exc})") from None
    promoted = original.model_copy(update={"action": "promote", "published_at": datetime.now(UTC)})
    publish_manifest(settings, promoted, timeout)
    return promoted


def version_rows(records: list[ManifestRecord], settings: Settings) -> list[dict[str, Any]]:
    """One row per version (its first publication), newest first, marking the current one."""
    current = current_manifest(records, settings.model_name, settings.pinned_model_version)
    first: dict[int, ModelManifest] = {}
    last_published: dict[int, datetime] = {}
    for record in records:
        m = record.manifest
        if m is None or m.model_name != settings.model_name:
            continue
        first.setdefault(m.version, m)
        last_published[m.version] = m.published_at
    return [
        {
            "version": v,
            "created_at": m.created_at,
            "last_published_at": last_published[v],
            "metrics": m.metrics,
            "current": current is not None and current.version == v,
            "training_window": f"{m.training_window.start}..{m.training_window.end}",
        }
        for v, m in sorted(first.items(), reverse=True)
    ]
