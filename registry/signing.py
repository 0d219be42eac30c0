"""Sign a model artifact into a manifest, and verify a manifest before unpickling its artifact.

No Kafka here: registry.model_topic moves manifests; this module decides whether to trust one.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import sklearn

from core.errors import CallscoreError
from core.settings import Settings
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
        **metadata.description(),
        published_at=datetime.now(UTC),
        artifact_sha256=digest,
        signature="0" * 64,
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
