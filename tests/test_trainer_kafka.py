"""Train -> publish -> read back -> verify -> load -> same predictions, on the real broker.

Also the champion/challenger gate, promote/list, and the bad-input cases around publication.
Trainings use the fast search space on synthetic data: never read quality from these numbers.
"""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from callscore.cli import main
from core.errors import CallscoreError
from core.kafka import BrokerUnavailableError
from registry.artifact import ArtifactError, load_artifact
from registry.keys import generate_keypair, trusted_keys
from registry.model_topic import current_manifest, promote, read_model_records, version_rows
from registry.signing import ManifestRejected, verify_and_load
from schemas import FEATURES
from trainer.data import add_periods, validate_frame
from trainer.schedule import Scheduler
from trainer.selection import CANDIDATE_METRICS
from trainer.synthetic import synthetic_bank_frame
from trainer.train import TrainOptions, run_training


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return add_periods(validate_frame(synthetic_bank_frame(2500, seed=11)))


def options(tmp_path, name="run", **kw):  # type: ignore[no-untyped-def]
    return TrainOptions(
        out=tmp_path / name, fast=True, search_seconds=0, importance_rows=300, n_jobs=1, **kw
    )


def test_train_publish_read_verify_load_predict(kafka_settings, frame, tmp_path):
    result = run_training(kafka_settings, frame, "0" * 64, options(tmp_path))
    assert result.manifest is not None and result.manifest.version == 1
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_version"] == 1 and metrics["published"]
    assert metrics["features"] == list(FEATURES)
    assert metrics["data"] == metrics["data"] | {"rows": len(frame), "sha256": "0" * 64}
    assert not metrics["data"]["is_uci_bank_full"]
    for values in metrics["candidates"].values():
        assert set(CANDIDATE_METRICS) <= set(values)
    assert metrics["selected"] in metrics["candidates"]
    assert {"roc.png", "pr.png", "gain_lift.png", "calibration.png", "backtest.png"} <= {
        p.name for p in out.glob("*.png")
    }
    assert "<img" in (out / "report.html").read_text()

    records = read_model_records(kafka_settings)
    manifest = current_manifest(records, kafka_settings.model_name, trusted_keys(kafka_settings))
    assert manifest is not None and manifest.version == 1
    loaded = verify_and_load(manifest, kafka_settings)
    sample = frame.iloc[:200]
    np.testing.assert_array_equal(loaded.predict(sample), result.artifact.predict(sample))
    assert loaded.metadata.tier_cut_points.high >= loaded.metadata.tier_cut_points.medium
    on_disk = load_artifact((out / "model.joblib").read_bytes())
    np.testing.assert_array_equal(on_disk.predict(sample), result.artifact.predict(sample))

    # Champion/challenger: a candidate trained on shuffled labels is refused, nothing published.
    shuffled = frame.assign(y=np.random.default_rng(0).permutation(frame["y"].to_numpy()))
    worse = run_training(kafka_settings, shuffled, "1" * 64, options(tmp_path, "worse"))
    assert not worse.decision.publish and worse.manifest is None
    assert worse.decision.champion_version == 1
    gate = json.loads((tmp_path / "worse" / "metrics.json").read_text())["gate"]
    assert gate["champion_roc_auc"] > gate["candidate_roc_auc"]
    assert len(read_model_records(kafka_settings)) == 1

    # A second, equally good model is published as v2; promote rolls back to v1.
    again = run_training(kafka_settings, frame, "0" * 64, options(tmp_path, "again"))
    assert again.manifest is not None and again.manifest.version == 2
    promoted = promote(kafka_settings, 1)
    records = read_model_records(kafka_settings)
    current = current_manifest(records, kafka_settings.model_name, trusted_keys(kafka_settings))
    assert current is not None and current.version == 1 and current.action == "promote"
    # A new record signed anew (action and published_at are signed), serving the same artifact.
    assert current.signature != manifest.signature
    assert current.artifact_sha256 == manifest.artifact_sha256
    verify_and_load(current, kafka_settings)
    assert promoted.published_at > manifest.published_at
    rows = version_rows(records, kafka_settings)
    assert [(r["version"], r["current"]) for r in rows] == [(2, False), (1, True)]
    with pytest.raises(CallscoreError, match="no version 7"):
        promote(kafka_settings, 7)

    # Wrong signing key: the champion fails verification, training refuses to go on.
    _kid, _private, other_public = generate_keypair(tmp_path / "other-keys")
    wrong = kafka_settings.model_copy(update={"model_trusted_keys": str(other_public)})
    with pytest.raises(CallscoreError, match="failed verification"):
        run_training(wrong, frame, "0" * 64, options(tmp_path, "wrongkey"))
    with pytest.raises(ManifestRejected, match="unknown_key"):
        verify_and_load(current, wrong)
    assert len(read_model_records(kafka_settings)) == 3


def test_corrupted_or_truncated_artifact_is_refused(kafka_settings, frame, tmp_path):
    from registry.artifact import dump_artifact
    from registry.signing import build_manifest
    from testkit.factories import small_artifact

    data = dump_artifact(small_artifact(1))
    with pytest.raises(ArtifactError, match="corrupted or truncated"):
        load_artifact(data[: len(data) // 2])
    settings = kafka_settings.model_copy(update={"inline_artifact_max_bytes": 0})
    manifest = build_manifest(data, small_artifact(1).metadata, settings)
    path = manifest.artifact_uri.removeprefix("file://")
    with open(path, "r+b") as handle:
        handle.truncate(len(data) - 100)
    with pytest.raises(ManifestRejected, match="sha256"):
        verify_and_load(manifest, settings)


def test_unreachable_broker_publishes_nothing(settings, frame, tmp_path):
    dead = settings.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
    with pytest.raises(BrokerUnavailableError):
        run_training(dead, frame, "0" * 64, options(tmp_path))
    assert not (tmp_path / "run").exists()


def test_cli_train_no_publish_and_bad_inputs(settings, frame, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CALLSCORE_MODEL_SIGNING_KEY_FILE", str(settings.model_signing_key_file))
    monkeypatch.setenv("CALLSCORE_MODEL_TRUSTED_KEYS", str(settings.model_trusted_keys))
    data = tmp_path / "bank.csv"
    frame.drop(columns=["year", "period"]).to_csv(data, sep=";", index=False)
    out = tmp_path / "cli"
    args = ["train", "--data", str(data), "--out", str(out), "--no-publish", "--search", "fast"]
    args.append("--no-outcomes")  # no broker here
    assert main([*args, "--search-seconds", "0"]) == 0
    card = json.loads((out / "metrics.json").read_text())
    assert card["gate"]["publish"] is False
    assert card["sources"]["outcomes_read"] is False and card["sources"]["outcome_rows"] == 0
    assert main(["train", "--data", str(tmp_path / "missing.csv"), "--out", str(out)]) == 1
    assert "data file not found" in capsys.readouterr().err
    data.write_text("a,b\n1,2\n")
    assert main(["train", "--data", str(data), "--out", str(out), "--no-publish"]) == 1
    assert "not ';'-separated" in capsys.readouterr().err


def test_cli_models_list_and_promote_errors(kafka_settings, monkeypatch, capsys):
    monkeypatch.setenv("CALLSCORE_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    monkeypatch.setenv("CALLSCORE_TOPIC_MODELS", kafka_settings.topic_models)
    monkeypatch.setenv(
        "CALLSCORE_MODEL_SIGNING_KEY_FILE", str(kafka_settings.model_signing_key_file)
    )
    monkeypatch.setenv("CALLSCORE_MODEL_TRUSTED_KEYS", str(kafka_settings.model_trusted_keys))
    assert main(["models", "list"]) == 0
    assert "no published versions" in capsys.readouterr().out
    assert main(["models", "promote", "3"]) == 1
    assert "no version 3" in capsys.readouterr().err


def test_schedule_retrains_on_outcomes_and_survives_errors(kafka_settings):
    from registry.artifact import dump_artifact
    from registry.model_topic import publish_manifest
    from registry.signing import build_manifest
    from testkit.factories import small_artifact
    from tests.test_schedule import T0, calls_at, produce_labels
    from trainer.schedule import TrainAttempt, observe

    settings = kafka_settings.model_copy(
        update={"retrain_interval_seconds": 365 * 86_400, "retrain_min_new_outcomes": 3}
    )
    calls: list[str] = []

    def train(reason: str, _labels: object) -> TrainAttempt:
        calls.append(reason)
        if len(calls) == 1:
            raise BrokerUnavailableError("broker went away")
        artifact = small_artifact(len(calls) - 1)
        metadata = artifact.metadata.model_copy(update={"labelled_until": T0})
        manifest = build_manifest(dump_artifact(artifact), metadata, settings)
        publish_manifest(settings, manifest)
        return TrainAttempt(manifest, "ok")

    scheduler = Scheduler(
        settings, lambda: observe(settings), train, lambda _l: None, sleep=lambda _s: None
    )
    first = scheduler.step()
    assert first.failed and "broker went away" in first.result  # transient: logged, survived
    assert scheduler.step().published_version == 1  # retried
    assert scheduler.step().action == "wait"
    predictions, outcomes = calls_at(settings, 3, T0 + timedelta(hours=1), timedelta(hours=1))
    produce_labels(settings, predictions, outcomes)
    decision = scheduler.step()
    assert decision.action == "retrain" and decision.published_version == 2
    assert "outcomes: 3 new after the training data" in decision.reason
    assert calls[-1] == decision.reason  # the trigger is the new version's reason

    def down() -> object:
        raise BrokerUnavailableError("down")

    broken = Scheduler(settings, down, train, lambda _l: None, sleep=lambda _s: None)  # type: ignore[arg-type]
    assert [d.action for d in broken.run(max_runs=2)] == ["error", "error"]
