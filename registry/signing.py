"""Sign a model artifact into a manifest, and verify a manifest before unpickling its artifact.

No Kafka here: registry.model_topic moves manifests; this module decides whether to trust one.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from datetime import UTC, datetime
from importlib.metadata import version
from urllib.parse import unquote, urlparse

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
    artifact_bytes: bytes, metadata: ArtifactMetadata, settings: Settings, sequence: int = 1
) -> ModelManifest:
    """A signed manifest; the artifact inline when small enough, else written to artifact_dir.

    `publish_manifest` gives it the topic's next sequence (and signs it again) when published."""
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
        sequence=sequence,
        key_id="0" * 16,
        signature=UNSIGNED,
        artifact_inline=artifact_bytes if inline else None,
        artifact_uri=uri,
    )
    return sign_manifest(unsigned, *load_signing_key(settings))


READ_CHUNK_BYTES = 64 * 1024


def _artifact_bytes(manifest: ModelManifest, settings: Settings) -> bytes:
    """The artifact, never more than model_record_max_bytes, from inline bytes or a regular
    file behind a file:// URI; its digest is checked before anything is unpickled."""
    limit = settings.model_record_max_bytes
    if manifest.artifact_inline is not None:
        data = manifest.artifact_inline
        if len(data) > limit:
            raise ManifestRejected(
                "artifact_size", f"inline artifact of {len(data)} bytes, more than {limit}"
            )
        digest = hashlib.sha256(data).hexdigest()
    else:
        assert manifest.artifact_uri is not None
        parsed = urlparse(manifest.artifact_uri)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise ManifestRejected(
                "artifact_uri", f"unsupported artifact URI '{manifest.artifact_uri}' (file:// only)"
            )
        data, digest = _read_bounded(
            unquote(parsed.path), limit, settings.artifact_read_timeout_seconds
        )
    if digest != manifest.artifact_sha256:
        raise ManifestRejected("sha256", "artifact bytes do not match artifact_sha256")
    return data


def _read_bounded(path: str, limit: int, timeout: float) -> tuple[bytes, str]:
    """At most `limit` bytes of a regular file, within `timeout` seconds, and their sha256.

    O_NONBLOCK so that opening a FIFO never waits for a writer; fstat before any read so that
    FIFOs, devices (/dev/zero) and directories are refused without reading a byte."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ManifestRejected("artifact_uri", f"cannot open {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ManifestRejected("artifact_uri", f"{path} is not a regular file")
        if info.st_size > limit:
            raise ManifestRejected(
                "artifact_size",
                f"{path} has {info.st_size} bytes, more than CALLSCORE_MODEL_RECORD_MAX_BYTES "
                f"({limit})",
            )
        chunks: list[bytes] = []
        sha = hashlib.sha256()
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise ManifestRejected("artifact_timeout", f"{path} not read within {timeout:g} s")
            chunk = os.read(fd, min(READ_CHUNK_BYTES, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            sha.update(chunk)
            size += len(chunk)
            if size > limit:  # the file grew after fstat
                raise ManifestRejected(
                    "artifact_size", f"{path} grew past {limit} bytes while being read"
                )
        return b"".join(chunks), sha.hexdigest()
    except OSError as exc:
        raise ManifestRejected("artifact_uri", f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


# The installed release, read without importing scikit-learn (reading the model topic, as a
# scheduler's check does, needs no estimator: importing it costs ~85 MB).
SKLEARN_VERSION = version("scikit-learn")


def sklearn_compatible(trained_with: str, running: str = SKLEARN_VERSION) -> bool:
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
            f"this process runs {SKLEARN_VERSION}",
        )
    data = _artifact_bytes(manifest, settings)
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
