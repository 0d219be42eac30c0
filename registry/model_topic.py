"""The model topic: publish manifests, read its history, the current and next versions, promote.

The topic has one partition and is keyed by model name. It may not be compacted (the local broker
never compacts), so readers keep the last record per model name themselves: the newest record in
topic order is the current model, which makes a rollback a republished older manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from core.errors import BrokerUnavailableError, CallscoreError
from core.kafka import producer_config
from core.settings import Settings
from core.topic_reader import Record, read_topics
from registry.artifact import ModelArtifact
from registry.keys import load_signing_key
from registry.signing import ManifestRejected, sign_manifest, verify_and_load
from schemas import ModelManifest


@dataclass(frozen=True)
class ManifestRecord:
    offset: int
    manifest: ModelManifest | None
    error: str | None = None  # why the record is not a readable manifest


def parse_record(record: Record) -> ManifestRecord:
    try:
        manifest = ModelManifest.model_validate_json(record.value or b"")
    except ValidationError as exc:
        return ManifestRecord(record.offset, None, f"malformed manifest: {exc.errors()[0]['msg']}")
    return ManifestRecord(record.offset, manifest)


def read_model_records(settings: Settings, timeout: float = 15.0) -> list[ManifestRecord]:
    """Every record of the model topic; BrokerUnavailableError when the broker does not answer."""
    from confluent_kafka import KafkaException

    try:
        records = read_topics(settings, [settings.topic_models], timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnavailableError(
            f"Kafka at {settings.bootstrap_servers} did not answer: {exc.args[0]}"
        ) from None
    return [parse_record(r) for r in records]


def publish_manifest(settings: Settings, manifest: ModelManifest, timeout: float = 15.0) -> None:
    """Produce one manifest and wait for the broker's acknowledgement."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer(producer_config(settings))
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    try:
        producer.produce(
            settings.topic_models,
            key=manifest.model_name.encode(),
            value=manifest.model_dump_json().encode(),
            on_delivery=on_delivery,
        )
    except KafkaException as exc:
        raise BrokerUnavailableError(f"could not publish the manifest: {exc}") from exc
    remaining = producer.flush(timeout)
    if remaining or errors:
        reason = errors[0] if errors else f"no acknowledgement within {timeout:.0f} s"
        raise BrokerUnavailableError(
            f"could not publish to '{settings.topic_models}' at {settings.bootstrap_servers}: "
            f"{reason}"
        )


def _manifests(records: list[ManifestRecord], model_name: str) -> list[ModelManifest]:
    return [r.manifest for r in records if r.manifest and r.manifest.model_name == model_name]


def current_manifest(
    records: list[ManifestRecord], model_name: str, pinned_version: int | None = None
) -> ModelManifest | None:
    """The newest readable record for the model (or for the pinned version), in topic order."""
    for manifest in reversed(_manifests(records, model_name)):
        if pinned_version is None or manifest.version == pinned_version:
            return manifest
    return None


def next_version(records: list[ManifestRecord], model_name: str) -> int:
    return max((m.version for m in _manifests(records, model_name)), default=0) + 1


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
            f"verification ({exc.reason}: {exc.message}); check CALLSCORE_MODEL_TRUSTED_KEYS"
        ) from None


def promote(settings: Settings, version: int, timeout: float = 15.0) -> ModelManifest:
    """Serve an existing version again (rollback/forward): its manifest re-signed as a new
    `promote` record (needs the private key)."""
    manifests = _manifests(read_model_records(settings, timeout), settings.model_name)
    matches = [m for m in manifests if m.version == version]
    if not matches:
        known = sorted({m.version for m in manifests})
        raise CallscoreError(
            f"no version {version} of '{settings.model_name}' on '{settings.topic_models}' "
            f"(known: {', '.join(map(str, known)) or 'none'})"
        )
    original = matches[-1]
    signer = load_signing_key(settings)  # fail before anything else: only the publisher signs
    try:
        verify_and_load(original, settings)
    except ManifestRejected as exc:
        raise CallscoreError(f"version {version} failed verification ({exc})") from None
    # A new record, signed anew: action and published_at are covered by the signature.
    promoted = sign_manifest(
        original.model_copy(update={"action": "promote", "published_at": datetime.now(UTC)}),
        *signer,
    )
    publish_manifest(settings, promoted, timeout)
    return promoted


def version_rows(records: list[ManifestRecord], settings: Settings) -> list[dict[str, Any]]:
    """One row per version (its first publication), newest first, marking the current one."""
    current = current_manifest(records, settings.model_name, settings.pinned_model_version)
    first: dict[int, ModelManifest] = {}
    last_published: dict[int, datetime] = {}
    for m in _manifests(records, settings.model_name):
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
            "reason": m.reason,
        }
        for v, m in sorted(first.items(), reverse=True)
    ]
