"""The model channel under attack: every field signed (Ed25519, one canonical serialisation),
key ids and trusted key sets, `callscore keys generate`."""

from __future__ import annotations

import os
import pickle
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from callscore.cli import main
from core.errors import CallscoreError
from core.kafka import ensure_topics
from core.settings import Settings
from core.topic_reader import Record, read_topics
from feedback.baselines import ManifestFilter
from registry.artifact import dump_artifact
from registry.keys import _write_new, generate_keypair, key_id, load_signing_key, trusted_keys
from registry.model_topic import (
    current_manifest,
    next_sequence,
    next_version,
    publish_manifest,
)
from registry.signing import (
    UNSIGNED,
    ManifestRejected,
    build_manifest,
    check_signature,
    sign_manifest,
    verify_and_load,
)
from registry.trust import ManifestRecord, parse_record, trusted_manifests
from schemas import ModelManifest
from streamer.metrics import StreamMetrics
from streamer.model_watcher import ModelWatcher
from testkit.factories import small_artifact
from testkit.harness import produce, publish_model, worker_settings


def _signed(settings: Settings, version: int = 1) -> ModelManifest:
    artifact = small_artifact(version)
    return build_manifest(dump_artifact(artifact), artifact.metadata, settings)


# One change per field, applied to the record's JSON as an attacker on the topic would.
# Every field but the signature must be listed: a new field fails the coverage test below.
TAMPER: dict[str, Any] = {
    "model_name": lambda v: v + "-x",
    "version": lambda v: v + 1,
    "created_at": lambda _v: "2001-01-01T00:00:00Z",
    "sklearn_version": lambda _v: "1.9.0",
    "python_version": lambda _v: "3.99.0",
    "feature_contract_hash": lambda v: ("0" if v[0] != "0" else "1") + v[1:],
    "metrics": lambda v: {**v, "holdout_roc_auc": 1.0},
    "tier_cut_points": lambda _v: {"high": 0.99, "medium": 0.98},
    "training_window": lambda v: {**v, "rows": v["rows"] + 1},
    "reason": lambda _v: "forged",
    "drift_baseline": lambda v: {**v, "rows": v["rows"] + 1},
    "calibration": lambda _v: {"slope": 2.0, "intercept": 0.5, "outcomes": 10},
    "labelled_until": lambda _v: "2010-11-30T00:00:00Z",
    "published_at": lambda _v: "2099-01-01T00:00:00Z",
    "action": lambda v: "promote" if v == "publish" else "publish",
    "sequence": lambda v: v + 1000,
    "artifact_sha256": lambda v: ("0" if v[0] != "0" else "1") + v[1:],
    "key_id": lambda v: ("0" if v[0] != "0" else "1") + v[1:],
    "artifact_inline": lambda v: ("A" if v[0] != "A" else "B") + v[1:],  # other bytes
    "artifact_uri": lambda _v: "file:///dev/zero",
}


def test_every_manifest_field_but_the_signature_is_tampered_below():
    assert set(TAMPER) == set(ModelManifest.model_fields) - {"signature"}


@pytest.mark.parametrize("field", sorted(TAMPER))
def test_a_field_changed_after_signing_is_refused(settings, field):
    manifest = _signed(settings)
    data = manifest.model_dump(mode="json")
    before = data[field]
    data[field] = TAMPER[field](before)
    assert data[field] != before
    if field == "artifact_uri":  # the record must still carry exactly one artifact location
        data["artifact_inline"] = None
    forged = ModelManifest.model_validate(data)
    assert forged.signature == manifest.signature
    keys = trusted_keys(settings)
    expected = "unknown_key" if field == "key_id" else "signature"
    with pytest.raises(ManifestRejected) as refused:
        check_signature(forged, keys)
    assert refused.value.reason == expected
    with pytest.raises(ManifestRejected):
        verify_and_load(forged, settings)
    # the drift-baseline readers (monitor, report) refuse it for the same reason
    record = Record("models", 0, 0, None, forged.model_dump_json().encode(), {}, 0)
    check = ManifestFilter(keys, forged.model_name).check(record)
    assert check.result in {"rejected", "ignored"}


def test_the_signed_record_survives_the_topic_round_trip(settings):
    manifest = _signed(settings)
    again = ModelManifest.model_validate_json(manifest.model_dump_json())
    assert again.signing_payload() == manifest.signing_payload()
    check_signature(again, trusted_keys(settings))
    assert verify_and_load(again, settings).metadata.version == 1


def test_unknown_field_is_refused_as_malformed(settings):
    data = _signed(settings).model_dump(mode="json")
    data["serves_everyone"] = True
    with pytest.raises(ValueError, match="serves_everyone"):
        ModelManifest.model_validate(data)


def test_untrusted_key_and_unknown_key_id_are_refused(settings, tmp_path):
    manifest = _signed(settings)
    _kid, other_private, other_public = generate_keypair(tmp_path / "intruder")
    intruder = settings.model_copy(update={"model_signing_key_file": other_private})
    forged = _signed(intruder)  # a complete, well-signed record by a key nobody trusts
    keys = trusted_keys(settings)
    with pytest.raises(ManifestRejected) as refused:
        check_signature(forged, keys)
    assert refused.value.reason == "unknown_key"
    # the intruder claims the trusted key's id: the signature does not verify
    claimed = forged.model_copy(update={"key_id": manifest.key_id})
    with pytest.raises(ManifestRejected) as refused:
        check_signature(claimed, keys)
    assert refused.value.reason == "signature"
    # trusting both keys (a rotation) accepts both records
    both = settings.model_copy(
        update={"model_trusted_keys": f"{settings.model_trusted_keys},{other_public}"}
    )
    assert set(trusted_keys(both)) == {manifest.key_id, forged.key_id}
    check_signature(forged, trusted_keys(both))
    check_signature(manifest, trusted_keys(both))


def test_keys_generate_writes_a_private_key_only_its_owner_reads(tmp_path, capsys):
    out = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    private = next(out.glob("*.key"))
    public = next(out.glob("*.pub.pem"))
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, model_signing_key_file=private, model_trusted_keys=str(out)
    )
    kid, key = load_signing_key(settings)
    assert kid in printed and kid == key_id(key.public_key()) and kid in private.name
    assert list(trusted_keys(settings)) == [kid]  # a directory of *.pem public keys
    # never overwrite: the exclusive create refuses an existing key file
    with pytest.raises(CallscoreError, match="refusing to overwrite"):
        _write_new(public, b"x", 0o644)
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_readers_refuse_a_private_key_or_nothing_to_trust(settings, tmp_path):
    private = settings.model_signing_key_file
    leaked = settings.model_copy(update={"model_trusted_keys": str(private)})
    with pytest.raises(CallscoreError, match="is a private key"):
        trusted_keys(leaked)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CallscoreError, match=r"no \*\.pem public key"):
        trusted_keys(settings.model_copy(update={"model_trusted_keys": str(empty)}))
    public_only = settings.model_copy(update={"model_signing_key_file": tmp_path / "missing.key"})
    with pytest.raises(CallscoreError, match="cannot read the model signing key"):
        load_signing_key(public_only)


# --- bounded artifact loading (no broker) ---


def _pointing_at(settings: Settings, uri: str, sequence: int = 2) -> ModelManifest:
    """A record signed by the trusted key whose artifact is at `uri`: what a stolen key, or a
    publisher tricked into a bad path, could produce. Only the read itself protects the scorer."""
    manifest = _signed(settings)
    moved = manifest.model_copy(
        update={"artifact_inline": None, "artifact_uri": uri, "sequence": sequence}
    )
    return sign_manifest(moved, *load_signing_key(settings))


def _reason(manifest: ModelManifest, settings: Settings) -> str:
    with pytest.raises(ManifestRejected) as refused:
        verify_and_load(manifest, settings)
    return refused.value.reason


def test_artifact_sources_that_are_not_small_regular_files_are_refused(settings, tmp_path):
    fifo = tmp_path / "artifact.fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.joblib"
    with open(big, "wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # 50 MB (sparse): over model_record_max_bytes
    started = time.monotonic()
    reasons = {
        "dev_zero": _reason(_pointing_at(settings, "file:///dev/zero"), settings),
        "fifo": _reason(_pointing_at(settings, fifo.as_uri()), settings),
        "missing": _reason(_pointing_at(settings, (tmp_path / "gone").as_uri()), settings),
        "directory": _reason(_pointing_at(settings, tmp_path.as_uri()), settings),
        "50MB": _reason(_pointing_at(settings, big.as_uri()), settings),
        "http": _reason(_pointing_at(settings, "http://127.0.0.1:9/a.joblib"), settings),
    }
    assert time.monotonic() - started < 5  # nothing waited for a writer or read a device
    assert reasons == {
        "dev_zero": "artifact_uri",
        "fifo": "artifact_uri",
        "missing": "artifact_uri",
        "directory": "artifact_uri",
        "50MB": "artifact_size",
        "http": "artifact_uri",
    }


class _Exploit:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


def test_an_artifact_whose_unpickling_runs_code_is_refused_before_unpickling(settings, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Exploit(str(marker)))
    good = _signed(settings)
    _kid, intruder_key, _public = generate_keypair(tmp_path / "intruder")
    intruder = settings.model_copy(update={"model_signing_key_file": intruder_key})
    path = tmp_path / "evil.joblib"
    path.write_bytes(evil)
    signer = load_signing_key(settings)
    attempts = {
        # swapped into a trusted record: the signature no longer matches
        "signature": good.model_copy(update={"artifact_inline": evil}),
        # a whole record signed by a key nobody trusts
        "unknown_key": sign_manifest(
            good.model_copy(update={"artifact_inline": evil}), *load_signing_key(intruder)
        ),
        # signed by the trusted key, but the bytes are not the ones its digest names
        "sha256": sign_manifest(
            good.model_copy(update={"artifact_inline": None, "artifact_uri": path.as_uri()}),
            *signer,
        ),
    }
    for reason, manifest in attempts.items():
        assert _reason(manifest, settings) == reason
    assert not marker.exists()
    # the check that stopped it is real: unpickling these bytes does run the code
    pickle.loads(evil)
    assert marker.exists()


# --- a running scorer and a fresh replica (real broker) ---


def _raw_model_records(settings: Settings) -> list[bytes]:
    return [r.value or b"" for r in read_topics(settings, [settings.topic_models], timeout=15)]


def _invalid_records(settings: Settings, old: bytes, count: int, tmp_path: Path) -> list[bytes]:
    """`count` records a fresh replica must see through: malformed, tampered, signed by an
    untrusted key, replays of an older record."""
    _kid, intruder_key, _public = generate_keypair(tmp_path / f"intruder-{count}")
    intruder = settings.model_copy(update={"model_signing_key_file": intruder_key})
    signed = ModelManifest.model_validate_json(old)
    tampered = signed.model_copy(update={"version": 99, "sequence": 10_000}).model_dump_json()
    untrusted = sign_manifest(
        signed.model_copy(update={"version": 98, "sequence": 10_001}), *load_signing_key(intruder)
    ).model_dump_json()
    kinds = [b"{not json", tampered.encode(), untrusted.encode(), old]
    return [kinds[i % len(kinds)] for i in range(count)]


def test_replays_floods_and_bad_artifacts_never_displace_the_newest_valid_model(
    kafka_settings, tmp_path, workers
):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1, seed=1)
    publish_model(settings, version=2, seed=2)
    v1_bytes = _raw_model_records(settings)[0]
    worker = workers(settings, "first")
    worker.wait_ready()
    assert worker.served_version() == 2

    # Finding 1: the raw bytes of the v1 record, produced again without any key.
    produce(settings, [(b"term-deposit", v1_bytes)], topic=settings.topic_models)
    worker.wait_until(
        lambda: worker.metric("callscore_model_reloads_total", 'reason="replay"') == 1,
        20,
        "the replay refused",
    )
    assert worker.served_version() == 2

    # Signed records whose artifact is /dev/zero or a FIFO, then a valid v3: v3 serves.
    fifo = tmp_path / "artifact.fifo"
    os.mkfifo(fifo)
    for uri in ("file:///dev/zero", fifo.as_uri()):
        publish_manifest(settings, _pointing_at(settings, uri))
    flood = _invalid_records(settings, v1_bytes, 100, tmp_path)
    produce(settings, [(b"term-deposit", v) for v in flood[:50]], topic=settings.topic_models)
    publish_model(settings, version=3, seed=3)
    produce(settings, [(b"term-deposit", v) for v in flood[50:]], topic=settings.topic_models)
    worker.wait_until(lambda: worker.served_version() == 3, 20, "v3 served")

    # Finding 4: a fresh replica reads 2 + 1 + 2 + 100 + 1 records and gets ready with v3.
    started = time.monotonic()
    fresh = workers(worker_settings(settings, tmp_path, "fresh"), "fresh")
    fresh.wait_ready(40)
    ready_after = time.monotonic() - started
    assert fresh.served_version() == 3
    refused = {
        reason: fresh.metric("callscore_model_reloads_total", f'reason="{reason}"')
        for reason in ("malformed", "signature", "unknown_key", "replay", "artifact_uri")
    }
    print(f"\nfresh replica ready in {ready_after:.1f} s; refusals by reason: {refused}")
    # 25 of each invalid kind; one more replay (the first one); the two bad artifact sources
    # were superseded by v3 before the replica had to load them
    assert refused == {
        "malformed": 25,
        "signature": 25,
        "unknown_key": 25,
        "replay": 26,
        "artifact_uri": 0,
    }
    first = {
        reason: worker.metric("callscore_model_reloads_total", f'reason="{reason}"')
        for reason in ("malformed", "signature", "unknown_key", "replay", "artifact_uri")
    }
    print(f"running replica refusals by reason: {first}")
    assert first["replay"] == 26 and first["malformed"] == 25


def test_monitor_and_report_refuse_replays_of_older_records(settings):
    def record(manifest: ModelManifest, offset: int) -> Record:
        return Record("models", 0, offset, None, manifest.model_dump_json().encode(), {}, 0)

    v1 = build_manifest(dump_artifact(small_artifact(1)), small_artifact(1).metadata, settings, 1)
    v2 = build_manifest(
        dump_artifact(small_artifact(2, seed=2)), small_artifact(2, seed=2).metadata, settings, 2
    )
    manifests = ManifestFilter(trusted_keys(settings), settings.model_name)
    results = [manifests.check(record(m, i)) for i, m in enumerate([v1, v2, v1])]
    assert [(c.result, c.reason, c.version) for c in results] == [
        ("trusted", "verified", 1),
        ("trusted", "verified", 2),
        ("rejected", "replay", 1),
    ]
    assert manifests.newest_sequence == 2


def test_champion_lookup_takes_the_highest_signed_sequence_not_topic_order(settings):
    v1 = build_manifest(dump_artifact(small_artifact(1)), small_artifact(1).metadata, settings, 1)
    v2 = build_manifest(
        dump_artifact(small_artifact(2, seed=2)), small_artifact(2, seed=2).metadata, settings, 2
    )
    forged = v1.model_copy(update={"sequence": 99, "metrics": {"holdout_roc_auc": 1.0}})
    records = [ManifestRecord(i, m) for i, m in enumerate([v1, v2, v1, forged])]
    keys = trusted_keys(settings)
    current = current_manifest(records, settings.model_name, keys)
    assert current is not None and (current.version, current.sequence) == (2, 2)
    assert next_sequence(records, settings.model_name, keys) == 3
    pinned = current_manifest(records, settings.model_name, keys, pinned_version=1)
    assert pinned is not None and pinned.sequence == 1


def test_an_unsigned_record_cannot_raise_the_next_version(settings):
    """The trainer's next version counts trusted records only: an unsigned record claiming v999
    does not make the next trained model v1000."""
    v1 = build_manifest(dump_artifact(small_artifact(1)), small_artifact(1).metadata, settings, 1)
    claim = v1.model_copy(update={"version": 999, "sequence": 999, "signature": UNSIGNED})
    records = [ManifestRecord(0, v1), ManifestRecord(1, claim)]
    keys = trusted_keys(settings)
    assert next_version(records, settings.model_name, keys) == 2
    assert next_sequence(records, settings.model_name, keys) == 2


def test_every_reader_trusts_the_same_records(settings):
    """The watcher, the drift-baseline readers and the publishers apply one rule: on a mix of
    valid, forged, replayed, malformed and foreign records they accept exactly the same ones."""
    v1 = build_manifest(dump_artifact(small_artifact(1)), small_artifact(1).metadata, settings, 1)
    v2 = build_manifest(
        dump_artifact(small_artifact(2, seed=2)), small_artifact(2, seed=2).metadata, settings, 2
    )
    forged = v2.model_copy(update={"version": 3, "sequence": 3, "signature": "f" * 128})
    other = sign_manifest(
        v2.model_copy(update={"model_name": "other", "sequence": 4}), *load_signing_key(settings)
    )
    values = [m.model_dump_json().encode() for m in (v1, forged, v2, v1, other)] + [b"{}"]
    raw = [Record("models", 0, i, None, v, {}, 0) for i, v in enumerate(values)]
    parsed = [parse_record(r) for r in raw]
    keys = trusted_keys(settings)

    by_registry = [(m.version, m.sequence) for m in trusted_manifests(parsed, "term-deposit", keys)]
    baselines = ManifestFilter(keys, "term-deposit")
    by_monitor = [c.version for c in map(baselines.check, raw) if c.result == "trusted"]
    metrics = StreamMetrics()
    watcher = ModelWatcher(settings, metrics)
    watcher.step(parsed, at_end=False)
    by_watcher = [(m.version, m.sequence) for _offset, m in watcher._pending]

    assert by_registry == [(1, 1), (2, 2)]
    assert by_watcher == by_registry
    assert by_monitor == [version for version, _sequence in by_registry]
    for reason in ("replay", "signature", "malformed"):
        assert metrics.reloads.labels("rejected", reason)._value.get() == 1, reason
