"""Manifests round-trip through the real broker; verification refuses tampered records."""

from __future__ import annotations

import pytest

from core.kafka import ensure_topics
from core.topic_reader import read_topics
from registry.artifact import dump_artifact
from registry.keys import trusted_keys
from registry.model_topic import (
    current_manifest,
    next_version,
    publish_manifest,
    read_model_records,
)
from registry.signing import ManifestRejected, build_manifest, verify_and_load
from testkit.factories import small_artifact


def test_publish_read_verify_load(kafka_settings):
    ensure_topics(kafka_settings)
    assert read_model_records(kafka_settings) == []
    for version in (1, 2):
        artifact = small_artifact(version)
        manifest = build_manifest(dump_artifact(artifact), artifact.metadata, kafka_settings)
        publish_manifest(kafka_settings, manifest)
    records = read_model_records(kafka_settings)
    assert [r.manifest.version for r in records if r.manifest] == [1, 2]
    # Compaction keeps each key's newest record: one key per version keeps every version.
    keys = [r.key for r in read_topics(kafka_settings, [kafka_settings.topic_models])]
    assert keys == [b"term-deposit/v1", b"term-deposit/v2"]
    trusted = trusted_keys(kafka_settings)
    assert next_version(records, "term-deposit", trusted) == 3
    current = current_manifest(records, "term-deposit", trusted)
    assert current is not None and current.version == 2
    pinned = current_manifest(records, "term-deposit", trusted, pinned_version=1)
    assert pinned is not None and pinned.version == 1
    loaded = verify_and_load(current, kafka_settings)
    assert loaded.metadata.version == 2


def test_absent_model_topic_reads_as_empty(kafka_settings):
    assert read_model_records(kafka_settings, timeout=10) == []


def test_large_artifact_goes_to_uri(settings):
    artifact = small_artifact(1)
    data = dump_artifact(artifact)
    small_limit = settings.model_copy(update={"inline_artifact_max_bytes": len(data) - 1})
    manifest = build_manifest(data, artifact.metadata, small_limit)
    assert manifest.artifact_inline is None and manifest.artifact_uri.startswith("file://")
    assert verify_and_load(manifest, small_limit).metadata.version == 1


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"signature": "f" * 64}, "signature"),
        ({"artifact_sha256": "a" * 64}, "signature"),  # digest is signed
        ({"feature_contract_hash": "b" * 64}, "signature"),  # contract hash is signed
    ],
)
def test_tampered_manifest_is_refused(settings, tamper, reason):
    artifact = small_artifact(1)
    manifest = build_manifest(dump_artifact(artifact), artifact.metadata, settings)
    with pytest.raises(ManifestRejected) as excinfo:
        verify_and_load(manifest.model_copy(update=tamper), settings)
    assert excinfo.value.reason == reason
