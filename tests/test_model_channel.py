"""The model channel under attack: every field signed (Ed25519, one canonical serialisation),
key ids and trusted key sets, `callscore keys generate`."""

from __future__ import annotations

import os
import stat
from typing import Any

import pytest

from callscore.cli import main
from callscore.factories import small_artifact
from core.errors import CallscoreError
from core.settings import Settings
from core.topic_reader import Record
from feedback.baselines import check_manifest
from registry.artifact import dump_artifact
from registry.keys import _write_new, generate_keypair, key_id, load_signing_key, trusted_keys
from registry.signing import ManifestRejected, build_manifest, check_signature, verify_and_load
from schemas import ModelManifest


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
    assert check_manifest(record, keys, forged.model_name).result in {"rejected", "ignored"}


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
