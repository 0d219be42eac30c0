"""The model topic: publish manifests, read its history, the current and next versions, promote.

The topic has one partition and is compacted, keyed by model name and version (`record_key`):
compaction keeps each version's newest record, so every version stays promotable (a key of the name
alone would leave only the newest record, and rollback nothing to roll back to). The local broker
never compacts, so readers keep what they need themselves. The current model is the record with the
highest `sequence` among those a trusted key signed; a promotion or rollback is a new record (next
sequence, signed anew). Single writer: one publisher at a time (the trainer, recalibrate or
`callscore models promote`) reads the topic and uses max + 1; two concurrent publishers could pick
the same sequence, and readers then keep the first and refuse the second as a replay.

A version's newest record may be a replay of an older one (produced again with the same key),
and once the cleaner ran, its only record: the versions (`version_rows`, `promote`,
`next_version`) are therefore read from every signed record, replays included
(registry.trust.signed_manifests); the current model only from the trusted ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.errors import BrokerUnavailableError, CallscoreError
from core.settings import Settings
from core.topic_reader import read_topics
from core.topic_writer import Outgoing, publish
from registry.artifact import ModelArtifact
from registry.keys import PublicKeys, load_signing_key, trusted_keys
from registry.signing import ManifestRejected, sign_manifest, verify_and_load
from registry.trust import ManifestRecord, parse_record, signed_manifests, trusted_manifests
from schemas import ModelManifest


def record_key(manifest: ModelManifest) -> bytes:
    """The record's compaction key: one per model version."""
    return f"{manifest.model_name}/v{manifest.version}".encode()


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


def produce_manifest(settings: Settings, manifest: ModelManifest, timeout: float = 15.0) -> None:
    """Produce one record as it is and wait for the broker's acknowledgement (no signing)."""
    # Always partition 0: the trust rule reads the records in topic order, which is only one
    # order on one partition, even when the topic was auto-created with several.
    record = Outgoing(
        settings.topic_models,
        record_key(manifest),
        manifest.model_dump_json().encode(),
        partition=0,
    )
    publish(settings, [record], f"the manifest to '{settings.topic_models}'", timeout)


def publish_manifest(
    settings: Settings, manifest: ModelManifest, timeout: float = 15.0
) -> ModelManifest:
    """Publish `manifest` as the topic's next record for its model: the next sequence, the
    publication time, signed with the private key. Returns the record as published."""
    kid, key = load_signing_key(settings)
    keys = trusted_keys(settings)
    if kid not in keys:
        raise CallscoreError(
            f"the signing key {kid} is not in CALLSCORE_MODEL_TRUSTED_KEYS: no reader would "
            "accept what it signs"
        )
    records = read_model_records(settings, timeout)
    update = {
        "sequence": next_sequence(records, manifest.model_name, keys),
        "published_at": datetime.now(UTC),
    }
    signed = sign_manifest(manifest.model_copy(update=update), kid, key)
    produce_manifest(settings, signed, timeout)
    return signed


def current_manifest(
    records: list[ManifestRecord],
    model_name: str,
    keys: PublicKeys,
    pinned_version: int | None = None,
) -> ModelManifest | None:
    """The trusted record with the highest sequence (of the pinned version when pinned); a
    replayed older record never wins (registry/trust.py)."""
    best: ModelManifest | None = None
    for manifest in trusted_manifests(records, model_name, keys):
        if pinned_version is not None and manifest.version != pinned_version:
            continue
        if best is None or manifest.sequence > best.sequence:
            best = manifest
    return best


def next_version(records: list[ManifestRecord], model_name: str, keys: PublicKeys) -> int:
    """Max + 1 over the signed records, replays included (a version whose only record left is a
    replay still exists): an unsigned one claiming v999 changes nothing."""
    return max((m.version for m in signed_manifests(records, model_name, keys)), default=0) + 1


def next_sequence(records: list[ManifestRecord], model_name: str, keys: PublicKeys) -> int:
    """Max + 1 over the trusted records: an unsigned record cannot push the sequence up."""
    return max((m.sequence for m in trusted_manifests(records, model_name, keys)), default=0) + 1


def load_champion(
    settings: Settings, records: list[ManifestRecord]
) -> tuple[ModelManifest, ModelArtifact] | None:
    """The currently served model, verified; None when nothing is published yet."""
    keys = trusted_keys(settings)
    manifest = current_manifest(records, settings.model_name, keys, settings.pinned_model_version)
    if manifest is None:
        if any(r.manifest and r.manifest.model_name == settings.model_name for r in records):
            raise CallscoreError(
                f"every record of '{settings.model_name}' on '{settings.topic_models}' failed "
                "verification: none is signed by a key in CALLSCORE_MODEL_TRUSTED_KEYS"
            )
        return None
    try:
        return manifest, verify_and_load(manifest, settings, keys)
    except ManifestRejected as exc:
        raise CallscoreError(
            f"the current model v{manifest.version} on '{settings.topic_models}' failed "
            f"verification ({exc.reason}: {exc.message}); check CALLSCORE_MODEL_TRUSTED_KEYS"
        ) from None


def promote(settings: Settings, version: int, timeout: float = 15.0) -> ModelManifest:
    """Serve an existing version again (rollback/forward): a new `promote` record naming it,
    with the next sequence, signed anew (needs the private key)."""
    load_signing_key(settings)  # fail before anything else: only the publisher signs
    keys = trusted_keys(settings)
    manifests = signed_manifests(read_model_records(settings, timeout), settings.model_name, keys)
    matches = [m for m in manifests if m.version == version]
    if not matches:
        known = sorted({m.version for m in manifests})
        raise CallscoreError(
            f"no version {version} of '{settings.model_name}' signed by a trusted key on "
            f"'{settings.topic_models}' (known: {', '.join(map(str, known)) or 'none'})"
        )
    original = max(matches, key=lambda m: m.sequence)
    try:
        verify_and_load(original, settings, keys)
    except ManifestRejected as exc:
        raise CallscoreError(f"version {version} failed verification ({exc})") from None
    return publish_manifest(settings, original.model_copy(update={"action": "promote"}), timeout)


def version_rows(records: list[ManifestRecord], settings: Settings) -> list[dict[str, Any]]:
    """One row per signed version (its first publication), newest first, marking the current;
    a version whose only record left is a replay is listed too (signed_manifests)."""
    keys = trusted_keys(settings)
    current = current_manifest(records, settings.model_name, keys, settings.pinned_model_version)
    first: dict[int, ModelManifest] = {}
    last_published: dict[int, datetime] = {}
    for m in signed_manifests(records, settings.model_name, keys):
        if m.version not in first or m.sequence < first[m.version].sequence:
            first[m.version] = m
        last_published[m.version] = max(
            m.published_at, last_published.get(m.version, m.published_at)
        )
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
