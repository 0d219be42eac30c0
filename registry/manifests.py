"""Build, sign, verify, publish and read ModelManifest records on the model topic.

The model topic has one partition and is keyed by model name. It may not be compacted (Tansu
never compacts), so readers keep the last record per model name themselves: the newest record in
topic order is the current model, which makes a rollback a republished older manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import platform
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import sklearn
from pydantic import ValidationError

from callscore.errors import CallscoreError
from callscore.kafka import BrokerUnavailableError, consumer_config, producer_config
from callscore.settings import Settings
from registry.artifact import ArtifactError, ArtifactMetadata, ModelArtifact, load_artifact
from schemas import ModelManifest, feature_contract_hash


class ManifestRejected(CallscoreError):
    """A manifest failed verification; `reason` is a short code for metrics and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


def sign(key: bytes, manifest: ModelManifest) -> str:
    return hmac.new(key, manifest.signing_payload(), hashlib.sha256).hexdigest()


def build_manifest(
    artifact_bytes: bytes, metadata: ArtifactMetadata, settings: Settings
) -> ModelManifest:
    """A signed manifest; the artifact inline when small enough, else written to artifact_dir."""
    digest = hashlib.sha256(artifact_bytes).hexdigest()
    inline = len(artifact_bytes) <= settings.inline_artifact_max_bytes
    uri = None
    if not inline:
        path = (
            settings.artifact_dir
            / metadata.model_name
            / f"v{metadata.version}-{digest[:12]}.joblib"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(artifact_bytes)
        uri = path.resolve().as_uri()
    unsigned = ModelManifest(
        model_name=metadata.model_name,
        version=metadata.version,
        created_at=metadata.created_at,
        published_at=datetime.now(UTC),
        artifact_sha256=digest,
        signature="0" * 64,
        sklearn_version=metadata.sklearn_version,
        python_version=metadata.python_version,
        feature_contract_hash=metadata.feature_contract_hash,
        metrics=metadata.metrics,
        tier_cut_points=metadata.tier_cut_points,
        training_window=metadata.training_window,
        artifact_inline=artifact_bytes if inline else None,
        artifact_uri=uri,
    )
    return unsigned.model_copy(update={"signature": sign(settings.signing_key(), unsigned)})


def _artifact_bytes(manifest: ModelManifest) -> bytes:
    if manifest.artifact_inline is not None:
        return manifest.artifact_inline
    assert manifest.artifact_uri is not None
    parsed = urlparse(manifest.artifact_uri)
    if parsed.scheme != "file":
        raise ManifestRejected("artifact_uri", f"unsupported URI scheme '{parsed.scheme}'")
    try:
        return Path(unquote(parsed.path)).read_bytes()
    except OSError as exc:
        raise ManifestRejected(
            "artifact_uri", f"cannot read {manifest.artifact_uri}: {exc}"
        ) from exc


def sklearn_compatible(trained_with: str, running: str = sklearn.__version__) -> bool:
    """Pickles are only supported within one scikit-learn minor release."""
    return trained_with.split(".")[:2] == running.split(".")[:2]


def verify_and_load(manifest: ModelManifest, settings: Settings) -> ModelArtifact:
    """Every check possible before unpickling, then the unpickle. Raises ManifestRejected."""
    expected = sign(settings.signing_key(), manifest)
    if not hmac.compare_digest(expected, manifest.signature):
        raise ManifestRejected("signature", "HMAC signature does not match the signing key")
    if manifest.feature_contract_hash != feature_contract_hash():
        raise ManifestRejected(
            "feature_contract",
            "model was built for another feature contract than this scorer's ProspectEvent",
        )
    if not sklearn_compatible(manifest.sklearn_version):
        raise ManifestRejected(
            "sklearn_version",
            f"trained with scikit-learn {manifest.sklearn_version}, "
            f"this process runs {sklearn.__version__}",
        )
    data = _artifact_bytes(manifest)
    if hashlib.sha256(data).hexdigest() != manifest.artifact_sha256:
        raise ManifestRejected("sha256", "artifact bytes do not match artifact_sha256")
    try:
        artifact = load_artifact(data)
    except ArtifactError as exc:
        raise ManifestRejected("artifact", str(exc)) from exc
    meta = artifact.metadata
    if (meta.model_name, meta.version) != (manifest.model_name, manifest.version):
        raise ManifestRejected(
            "artifact", "artifact metadata names another model or version than its manifest"
        )
    return artifact


def runtime_versions() -> dict[str, str]:
    return {"sklearn_version": sklearn.__version__, "python_version": platform.python_version()}


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


@dataclass(frozen=True)
class ManifestRecord:
    offset: int
    manifest: ModelManifest | None
    error: str | None = None  # why the record is not a readable manifest


def parse_record(offset: int, value: bytes | None) -> ManifestRecord:
    try:
        return ManifestRecord(offset, ModelManifest.model_validate_json(value or b""))
    except ValidationError as exc:
        return ManifestRecord(offset, None, f"malformed manifest: {exc.errors()[0]['msg']}")


class ModelTopicReader:
    """Reads the model topic from its beginning, with no consumer group commits.

    Each reader has a unique group id and manual assignment, so every replica sees every record.
    """

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._topic = settings.topic_models
        self._consumer = Consumer(
            consumer_config(
                settings,
                group_id=f"callscore-model-reader-{uuid.uuid4()}",
                **{"enable.partition.eof": True},
            )
        )
        self._consumer.assign([TopicPartition(self._topic, 0, OFFSET_BEGINNING)])
        self.at_end = False

    def poll(self, timeout: float) -> list[ManifestRecord]:
        """New records since the last call (possibly none); sets at_end on reaching the end."""
        from confluent_kafka import KafkaError

        records = []
        for message in self._consumer.consume(num_messages=100, timeout=timeout):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self.at_end = True
                    continue
                if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue  # nothing published yet
                raise BrokerUnavailableError(f"reading '{self._topic}': {error}")
            self.at_end = False
            records.append(parse_record(message.offset() or 0, message.value()))
        return records

    def read_to_end(self, timeout: float = 15.0) -> list[ManifestRecord]:
        """All records up to the current end of the topic (an absent topic reads as empty)."""
        import time

        deadline = time.monotonic() + timeout
        records: list[ManifestRecord] = []
        while time.monotonic() < deadline:
            records.extend(self.poll(0.2))
            if self.at_end:
                return records
            if not records and self._topic_missing():
                return records
        raise BrokerUnavailableError(
            f"could not read '{self._topic}' to its end in {timeout:.0f} s"
        )

    def _topic_missing(self) -> bool:
        metadata = self._consumer.list_topics(timeout=5)
        topic = metadata.topics.get(self._topic)
        return topic is None or topic.error is not None

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ModelTopicReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def current_manifest(
    records: list[ManifestRecord], model_name: str, pinned_version: int | None = None
) -> ModelManifest | None:
    """The newest readable record for the model (or for the pinned version), in topic order."""
    for record in reversed(records):
        manifest = record.manifest
        if manifest is None or manifest.model_name != model_name:
            continue
        if pinned_version is None or manifest.version == pinned_version:
            return manifest
    return None


def next_version(records: list[ManifestRecord], model_name: str) -> int:
    versions = [
        r.manifest.version for r in records if r.manifest and r.manifest.model_name == model_name
    ]
    return max(versions, default=0) + 1
