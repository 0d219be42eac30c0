"""Sign a model artifact into a manifest, and verify a manifest before unpickling its artifact.

No Kafka here: registry.model_topic moves manifests; this module decides whether to trust one.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import sklearn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from core.errors import CallscoreError
from core.settings import Settings
from registry.artifact import ArtifactError, ArtifactMetadata, ModelArtifact, load_artifact
from registry.keys import load_signing_key, trusted_keys
from schemas import ModelManifest, feature_contract_hash


class ManifestRejected(CallscoreError):
    """A manifest failed verification; `reason` is a short code for metrics and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


UNSIGNED = "0" * 128


def sign_manifest(manifest: ModelManifest, key_id: str, key: Ed25519PrivateKey) -> ModelManifest:
    """`manifest` with `key_id` set and signed over every other field."""
    named = manifest.model_copy(update={"key_id": key_id, "signature": UNSIGNED})
    return named.model_copy(update={"signature": key.sign(named.signing_payload()).hex()})


def check_signature(manifest: ModelManifest, keys: dict[str, Ed25519PublicKey]) -> None:
    """Raise ManifestRejected unless a trusted key signed exactly this record."""
    public = keys.get(manifest.key_id)
    if public is None:
        raise ManifestRejected(
            "unknown_key", f"key id {manifest.key_id} is not in CALLSCORE_MODEL_TRUSTED_KEYS"
        )
    try:
        public.verify(bytes.fromhex(manifest.signature), manifest.signing_payload())
    except InvalidSignature:
        raise ManifestRejected(
            "signature", f"signature does not match the record under key {manifest.key_id}"
        ) from None


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
        **metadata.description(),
        published_at=datetime.now(UTC),
        artifact_sha256=digest,
        key_id="0" * 16,
        signature=UNSIGNED,
        artifact_inline=artifact_bytes if inline else None,
        artifact_uri=uri,
    )
    return sign_manifest(unsigned, *load_signing_key(settings))


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


def verify_and_load(
    manifest: ModelManifest,
    settings: Settings,
    keys: dict[str, Ed25519PublicKey] | None = None,
) -> ModelArtifact:
    """Every check possible before unpickling, then the unpickle. Raises ManifestRejected.

    `keys` defaults to Settings.model_trusted_keys (read from disk on each call)."""
    check_signature(manifest, trusted_keys(settings) if keys is None else keys)
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
