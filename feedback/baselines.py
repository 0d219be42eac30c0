"""Which model-topic records to trust for a version's drift baseline (no unpickling needed).

The monitor and `callscore report` only need the manifest's fields, not its artifact, so they
check the Ed25519 signature against the trusted public keys and read the baseline; a record that
fails is counted with its reason and never used, and so is a signed record whose sequence is not
above the newest one accepted (a replay).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.topic_reader import Record
from registry.model_topic import parse_record
from registry.signing import ManifestRejected, check_signature
from schemas import DriftBaseline


@dataclass(frozen=True)
class ManifestCheck:
    """What one model-topic record tells a reader of drift baselines."""

    result: Literal["trusted", "rejected", "ignored"]
    reason: str
    version: int | None = None
    baseline: DriftBaseline | None = None
    sequence: int = 0


def check_manifest(
    record: Record, keys: dict[str, Ed25519PublicKey], model_name: str
) -> ManifestCheck:
    """Trust a manifest of `model_name` only when a trusted key signed every field of it."""
    parsed = parse_record(record)
    manifest = parsed.manifest
    if manifest is None:
        return ManifestCheck("rejected", "malformed")
    if manifest.model_name != model_name:
        return ManifestCheck("ignored", "other_model", manifest.version)
    try:
        check_signature(manifest, keys)
    except ManifestRejected as exc:
        return ManifestCheck("rejected", exc.reason, manifest.version)
    if manifest.drift_baseline is None:
        return ManifestCheck(
            "trusted", "no_drift_baseline", manifest.version, None, manifest.sequence
        )
    return ManifestCheck(
        "trusted", "verified", manifest.version, manifest.drift_baseline, manifest.sequence
    )


class ManifestFilter:
    """`check_manifest` in topic order, also refusing replays (sequence not above the newest)."""

    def __init__(self, keys: dict[str, Ed25519PublicKey], model_name: str) -> None:
        self._keys = keys
        self._model_name = model_name
        self.newest_sequence = 0

    def check(self, record: Record) -> ManifestCheck:
        check = check_manifest(record, self._keys, self._model_name)
        if check.result != "trusted":
            return check
        if check.sequence <= self.newest_sequence:
            return ManifestCheck("rejected", "replay", check.version)
        self.newest_sequence = check.sequence
        return check


def trusted_baselines(
    records: Iterable[Record], keys: dict[str, Ed25519PublicKey], model_name: str
) -> dict[int, DriftBaseline]:
    """The drift baseline of every version, from its newest trusted manifest in topic order."""
    baselines = {}
    manifests = ManifestFilter(keys, model_name)
    for record in records:
        check = manifests.check(record)
        if check.version is not None and check.baseline is not None:
            baselines[check.version] = check.baseline
    return baselines
