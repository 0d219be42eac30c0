"""Each model version's drift baseline, from the records the registry's trust rule accepts.

The monitor and `callscore report` only need the manifest's fields, not its artifact, so the
rule of registry/trust.py (signature, no replay) is all they check before reading the baseline;
a record that fails is counted with its reason and never used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from core.topic_reader import Record
from registry.keys import PublicKeys
from registry.trust import ModelTrust, parse_record
from schemas import DriftBaseline


@dataclass(frozen=True)
class ManifestCheck:
    """What one model-topic record tells a reader of drift baselines."""

    result: Literal["trusted", "rejected", "ignored"]
    reason: str  # the trust rule's reason, or `no_drift_baseline` for a trusted record without
    version: int | None = None
    baseline: DriftBaseline | None = None


class ManifestFilter:
    """The trust rule over raw model-topic records, in topic order, yielding baselines."""

    def __init__(self, keys: PublicKeys, model_name: str) -> None:
        self._trust = ModelTrust(keys, model_name)

    @property
    def newest_sequence(self) -> int:
        return self._trust.newest_sequence

    def check(self, record: Record) -> ManifestCheck:
        verdict = self._trust.check(parse_record(record))
        manifest = verdict.manifest
        if not verdict.trusted or manifest is None:
            return ManifestCheck(verdict.result, verdict.reason, verdict.version)
        if manifest.drift_baseline is None:
            return ManifestCheck("trusted", "no_drift_baseline", manifest.version)
        return ManifestCheck("trusted", "verified", manifest.version, manifest.drift_baseline)


def trusted_baselines(
    records: Iterable[Record], keys: PublicKeys, model_name: str
) -> dict[int, DriftBaseline]:
    """The drift baseline of every version, from its newest trusted manifest in topic order."""
    baselines = {}
    manifests = ManifestFilter(keys, model_name)
    for record in records:
        check = manifests.check(record)
        if check.version is not None and check.baseline is not None:
            baselines[check.version] = check.baseline
    return baselines
