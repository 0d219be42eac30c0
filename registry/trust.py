"""Which model-topic records to trust: one rule for every reader of the model topic.

The scorer's watcher, the monitor's drift baselines, `callscore report`, and every publisher
choosing the next version or sequence read the same records, so they must agree on which of them
count. A record counts (`trusted`) when, in topic order:

1. it parses as a `ModelManifest` (else `rejected`, reason `malformed`);
2. it is a manifest of the reader's model (else `ignored`, reason `other_model`);
3. a trusted Ed25519 key signed every field of it (`registry.signing.check_signature`: no
   artifact is read, nothing is unpickled; else `rejected` with the signature check's reason);
4. its `sequence` is above every trusted sequence before it (else `rejected`, reason `replay`:
   an older record written again can never become current).

An unsigned or forged record therefore counts for nothing: it is never served, never a baseline,
and cannot push the next version or sequence up. Full verification of a candidate's artifact
(contract, scikit-learn version, sha256) happens later, only before it is unpickled.

A replay is refused as a candidate, yet what it says is what a trusted key signed: its version
exists (`signed_manifests`). That matters on the compacted topic: a record produced again with
its original's key (model name and version) replaces the original once the log cleaner runs,
so the replay may be all that is left of its version; read from `trusted_manifests` alone, the
version would vanish from `callscore models list`, could not be promoted back, and its number
could be given to the next trained model (tests/test_compaction.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from core.topic_reader import Record
from registry.keys import PublicKeys
from registry.signing import ManifestRejected, check_signature
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


@dataclass(frozen=True)
class Verdict:
    """What the rule says of one record; `reason` is a short code for metrics and logs."""

    result: Literal["trusted", "rejected", "ignored"]
    reason: str
    offset: int
    manifest: ModelManifest | None = None
    message: str = ""

    @property
    def trusted(self) -> bool:
        return self.result == "trusted"

    @property
    def version(self) -> int | None:
        return self.manifest.version if self.manifest is not None else None


class ModelTrust:
    """The rule applied to one model's records in topic order (it remembers the newest trusted
    sequence, so feed it every record once, in order)."""

    def __init__(self, keys: PublicKeys, model_name: str) -> None:
        self._keys = keys
        self.model_name = model_name
        self.newest_sequence = 0  # highest sequence of a trusted record so far

    def check(self, record: ManifestRecord) -> Verdict:
        manifest, offset = record.manifest, record.offset
        if manifest is None:
            return Verdict("rejected", "malformed", offset, None, record.error or "malformed")
        if manifest.model_name != self.model_name:
            return Verdict("ignored", "other_model", offset, manifest)
        try:
            check_signature(manifest, self._keys)
        except ManifestRejected as exc:
            return Verdict("rejected", exc.reason, offset, manifest, exc.message)
        if manifest.sequence <= self.newest_sequence:
            return Verdict(
                "rejected",
                "replay",
                offset,
                manifest,
                f"sequence {manifest.sequence} is not above {self.newest_sequence}, the newest "
                "already seen",
            )
        self.newest_sequence = manifest.sequence
        return Verdict("trusted", "verified", offset, manifest)


def trusted_manifests(
    records: Iterable[ManifestRecord], model_name: str, keys: PublicKeys
) -> list[ModelManifest]:
    """The model's trusted records, in topic order: the candidates to serve."""
    trust = ModelTrust(keys, model_name)
    return [v.manifest for v in map(trust.check, records) if v.trusted and v.manifest is not None]


def signed_manifests(
    records: Iterable[ManifestRecord], model_name: str, keys: PublicKeys
) -> list[ModelManifest]:
    """The model's records a trusted key signed, replays included, in topic order: the versions
    that exist (to list, to promote back, to number the next one past). Never a candidate to
    serve: a replay's sequence is not above one read before it, so the highest sequence here is
    always a trusted record's."""
    trust = ModelTrust(keys, model_name)
    return [
        v.manifest
        for v in map(trust.check, records)
        if v.manifest is not None and (v.trusted or v.reason == "replay")
    ]
