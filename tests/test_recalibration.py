"""Online recalibration: the Platt fit, its composition with a served calibration, the derived
artifact, and a running scorer that hot-loads it (real broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from callscore.cli import main
from callscore.simulator.events import events_from_frame
from core.kafka import ensure_topics
from feedback.labels import label_set
from feedback.recalibrate import (
    MIN_CALIBRATION_ROWS,
    NotEnoughOutcomes,
    fit_calibration,
    recalibrate,
    recalibrated_artifact,
    remap_scores,
)
from registry.artifact import dump_artifact
from registry.calibration import apply_calibration, logit
from registry.model_topic import read_model_records
from registry.signing import build_manifest, verify_and_load
from schemas import FEATURES, CallOutcome, PredictionRecord, ScoreCalibration, task_id_for
from streamer.scoring import feature_frame
from testkit.factories import small_artifact
from testkit.harness import as_event, collect, event_bytes, produce, publish_model, worker_settings
from trainer.synthetic import synthetic_bank_frame

# The "drift": the true log-odds sit this far above what the pipeline learned.
SHIFT = 1.5


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def raw_sample(rng: np.random.Generator, n: int) -> np.ndarray:
    """Raw pipeline scores spread like a real model's: mostly low, a long high tail."""
    return sigmoid(rng.normal(-1.8, 1.2, size=n))


def shifted_labels(rng: np.random.Generator, raw: np.ndarray) -> np.ndarray:
    return rng.random(len(raw)) < sigmoid(logit(raw) + SHIFT)


def test_fit_moves_the_mean_score_to_the_shifted_rate_on_a_fresh_sample():
    rng = np.random.default_rng(1)
    raw = raw_sample(rng, 2000)
    calibration = fit_calibration(raw, shifted_labels(rng, raw), previous=None)
    assert calibration.outcomes == 2000
    assert calibration.slope == pytest.approx(1.0, abs=0.15)
    assert calibration.intercept == pytest.approx(SHIFT, abs=0.2)

    fresh = raw_sample(rng, 20_000)
    observed = shifted_labels(rng, fresh).mean()
    before = abs(fresh.mean() - observed)
    after = abs(apply_calibration(fresh, calibration).mean() - observed)
    assert before > 0.2, (fresh.mean(), observed)
    # The fit sample's own rate is off by ~0.011 (1 sd at 2000 rows); allow 3.5 sd.
    assert after < 0.04, after


def test_fit_on_served_scores_is_stated_against_the_raw_score():
    """Served scores carry the previous calibration: the fit must undo it, not stack on it."""
    rng = np.random.default_rng(2)
    raw = raw_sample(rng, 3000)
    labels = rng.random(len(raw)) < sigmoid(1.2 * logit(raw) + 0.8)
    previous = ScoreCalibration(slope=0.7, intercept=-0.4, outcomes=100)
    served = apply_calibration(raw, previous)

    composed = fit_calibration(served, labels, previous)
    direct = fit_calibration(raw, labels, previous=None)
    assert composed.slope == pytest.approx(direct.slope, rel=1e-4)
    assert composed.intercept == pytest.approx(direct.intercept, rel=1e-4, abs=1e-4)
    assert composed.slope == pytest.approx(1.2, abs=0.15)
    assert composed.intercept == pytest.approx(0.8, abs=0.2)
    # Stacking on the served logit would have given slope 1.2 / 0.7 ~ 1.7.
    stacked = fit_calibration(served, labels, previous=None)
    assert stacked.slope == pytest.approx(direct.slope / previous.slope, rel=1e-3)
    # What the new version serves equals the served scores moved through the remap.
    np.testing.assert_allclose(
        apply_calibration(raw, composed), remap_scores(served, previous, composed), rtol=1e-9
    )


def test_calibration_and_remap_are_monotone():
    rng = np.random.default_rng(3)
    raw = raw_sample(rng, 1000)
    previous = ScoreCalibration(slope=1.3, intercept=0.2, outcomes=100)
    calibration = fit_calibration(apply_calibration(raw, previous), shifted_labels(rng, raw), None)
    assert calibration.slope > 0
    grid = np.linspace(0.001, 0.999, 999)
    assert np.all(np.diff(remap_scores(grid, previous, calibration)) > 0)
    assert np.all(np.diff(apply_calibration(grid, calibration)) > 0)


def test_too_few_rows_or_one_class_are_refused_by_name():
    rng = np.random.default_rng(4)
    raw = raw_sample(rng, MIN_CALIBRATION_ROWS - 1)
    with pytest.raises(NotEnoughOutcomes, match=f"at least {MIN_CALIBRATION_ROWS}"):
        fit_calibration(raw, shifted_labels(rng, raw), None)
    raw = raw_sample(rng, 200)
    with pytest.raises(NotEnoughOutcomes, match="both classes"):
        fit_calibration(raw, np.zeros(200, dtype=bool), None)


def test_a_non_positive_slope_falls_back_to_an_intercept_shift():
    rng = np.random.default_rng(5)
    raw = raw_sample(rng, 2000)
    labels = rng.random(len(raw)) < sigmoid(-logit(raw) - 1.0)  # the ranking is reversed
    previous = ScoreCalibration(slope=0.9, intercept=0.3, outcomes=100)
    served = apply_calibration(raw, previous)
    notes: list[str] = []
    calibration = fit_calibration(served, labels, previous, notes)
    assert calibration.slope == previous.slope  # ranking kept
    assert notes and "not positive" in notes[0]
    # The maximum-likelihood intercept makes the mean score equal the observed rate.
    assert apply_calibration(raw, calibration).mean() == pytest.approx(labels.mean(), abs=1e-6)


def test_recalibrated_artifact_keeps_pipeline_tiers_and_percentiles():
    artifact = small_artifact(1)
    frame = synthetic_bank_frame(rows=800, seed=11)[list(FEATURES)]
    old = artifact.predict(frame)
    calibration = ScoreCalibration(slope=0.8, intercept=1.1, outcomes=300)
    derived = recalibrated_artifact(artifact, calibration, version=2, reason="test")
    new = derived.predict(frame)

    assert derived.pipeline is artifact.pipeline
    meta, was = derived.metadata, artifact.metadata
    assert (meta.version, meta.reason, meta.calibration) == (2, "test", calibration)
    assert meta.created_at >= was.created_at
    assert (meta.training_window, meta.metrics, meta.labelled_until) == (
        was.training_window,
        was.metrics,
        was.labelled_until,
    )
    assert new.mean() > old.mean() + 0.1  # the level moved ...
    np.testing.assert_array_equal(np.argsort(new, kind="stable"), np.argsort(old, kind="stable"))
    assert derived.priorities(new) == artifact.priorities(old)  # ... tiers and ranks did not
    np.testing.assert_array_equal(derived.percentiles(new), artifact.percentiles(old))
    assert was.drift_baseline is not None and meta.drift_baseline is not None
    old_bins = np.searchsorted(was.drift_baseline.score.edges or [], old, side="right")
    new_bins = np.searchsorted(meta.drift_baseline.score.edges or [], new, side="right")
    np.testing.assert_array_equal(new_bins, old_bins)

    # A second recalibration is again stated against the raw pipeline score.
    again = ScoreCalibration(slope=1.1, intercept=-0.2, outcomes=300)
    twice = recalibrated_artifact(derived, again, version=3, reason="again")
    raw = artifact.pipeline.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(twice.predict(frame), apply_calibration(raw, again), rtol=1e-12)
    assert twice.priorities(twice.predict(frame)) == artifact.priorities(old)


def test_recalibrated_artifact_signs_and_verifies(settings):
    derived = recalibrated_artifact(
        small_artifact(1), ScoreCalibration(slope=1.0, intercept=0.5, outcomes=60), 2, "r"
    )
    manifest = build_manifest(dump_artifact(derived), derived.metadata, settings)
    assert manifest.calibration == derived.metadata.calibration
    loaded = verify_and_load(manifest, settings)
    assert loaded.metadata == derived.metadata


# --- with a real broker and a running scorer ---


def _predictions(tasks: list, events: dict[str, dict]) -> list[PredictionRecord]:
    records = []
    for task in tasks:
        body = task.json()
        event = events[body["event_id"]]
        records.append(
            PredictionRecord(
                event_id=body["event_id"],
                task_id=body["task_id"],
                prospect_id=body["prospect_id"],
                occurred_at=event["occurred_at"],
                features={k: event[k] for k in FEATURES},
                score=body["score"],
                priority=body["priority"],
                percentile=body["percentile"],
                model_version=body["model_version"],
                scored_at=body["scored_at"],
            )
        )
    return records


def _outcomes(predictions: list[PredictionRecord], labels: np.ndarray) -> list[CallOutcome]:
    called = datetime.now(UTC)
    return [
        CallOutcome(
            task_id=task_id_for(p.event_id),
            prospect_id=p.prospect_id,
            called_at=called + timedelta(seconds=i),
            subscribed=bool(label),
            duration_seconds=60,
        )
        for i, (p, label) in enumerate(zip(predictions, labels, strict=True))
    ]


def _write(settings, topic: str, records: list) -> None:
    produce(
        settings,
        [
            (b"key", r)
            if isinstance(r, bytes)
            else (r.prospect_id.encode(), r.model_dump_json().encode())
            for r in records
        ],
        topic=topic,
    )


def _score(settings, events: list[dict], version: int) -> list:
    ids = {e["event_id"] for e in events}
    produce(settings, [event_bytes(e) for e in events])

    def done(records: list) -> bool:
        return len({r.json()["event_id"] for r in records if r.json()["event_id"] in ids}) == len(
            ids
        )

    tasks = collect(settings, settings.task_topics.values(), done, timeout=60)
    mine = [t for t in tasks if t.json()["event_id"] in ids]
    assert len(mine) == len(ids)
    assert {t.json()["model_version"] for t in mine} == {version}
    return mine


def test_scorer_hot_loads_a_recalibration_that_tracks_the_observed_rate(
    kafka_settings, tmp_path, workers, monkeypatch, capsys
):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    v1 = publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()
    rng = np.random.default_rng(7)

    def labels_for(events: list[dict]) -> np.ndarray:
        """The drifted process: log-odds SHIFT above the v1 pipeline's."""
        raw = v1.predict(feature_frame([as_event(e) for e in events]))
        return shifted_labels(rng, raw)

    # Too few outcomes: nothing is published.
    first = events_from_frame(synthetic_bank_frame(rows=600, seed=21), "w1")
    tasks = _score(settings, first, version=1)
    predictions = _predictions(tasks, {e["event_id"]: e for e in first})
    outcomes = _outcomes(predictions, labels_for(first))
    few = label_set(
        [p.model_dump_json().encode() for p in predictions[:10]],
        [o.model_dump_json().encode() for o in outcomes[:10]],
    )
    assert len(few.labelled) == 10 and recalibrate(settings, few.columns) is None
    assert len(read_model_records(settings)) == 1

    # The window of labelled outcomes: predictions and outcomes on their topics, then the CLI.
    # Outcomes first: the join must hold an outcome until its prediction arrives. (The scorer
    # may log the same predictions itself; a duplicate prediction is the same record.)
    _write(settings, settings.topic_outcomes, outcomes)
    _write(settings, settings.topic_outcomes, [b'{"subscribed": "maybe"}'])  # skipped, counted
    _write(settings, settings.topic_predictions, predictions)
    fit_scores = np.array([p.score for p in predictions])
    fit_rate = np.mean([o.subscribed for o in outcomes])
    assert fit_rate > fit_scores.mean() + 0.1  # the drift the recalibration must absorb

    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert main(["recalibrate", "--window", "500"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("published term-deposit v2: recalibration of v1 on 500 outcomes")
    assert "600 outcomes (1 invalid, 0 not reached: skipped), 600 matched, 0 unmatched" in line
    # The window is the 500 latest calls (outcomes are called one second apart, in order).
    window_score = np.mean([p.score for p in predictions[100:]])
    window_rate = np.mean([o.subscribed for o in outcomes[100:]])
    assert f"mean score {window_score:.3f} -> " in line
    assert f"vs observed {window_rate:.3f}" in line
    worker.wait_until(lambda: worker.served_version() == 2, 30, "v2 served by the worker")

    # The acceptance test: on the NEXT window the served mean score is closer to the rate.
    # New prospects: the first window's were just called, so they are cooling down.
    following = events_from_frame(
        synthetic_bank_frame(rows=600, seed=22), "w2", prospect_ids=[f"w2-{i}" for i in range(600)]
    )
    observed = labels_for(following).mean()
    served = np.array([t.json()["score"] for t in _score(settings, following, version=2)])
    before = v1.predict(feature_frame([as_event(e) for e in following]))
    print(
        json.dumps(
            {
                "fit_mean_score": fit_scores.mean(),
                "fit_rate": fit_rate,
                "next_rate": observed,
                "next_mean_v1": before.mean(),
                "next_mean_v2": served.mean(),
            }
        )
    )
    assert abs(served.mean() - observed) < 0.5 * abs(before.mean() - observed)
    # Sampling noise of the two windows' rates is ~0.03 (1 sd): allow 3 sd.
    assert abs(served.mean() - observed) < 0.1


def test_recalibrate_without_a_model_is_a_one_line_error(kafka_settings, monkeypatch, capsys):
    for name, value in kafka_settings.as_env().items():
        monkeypatch.setenv(name, value)
    assert main(["recalibrate"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"callscore: error: no model 'term-deposit' on '{kafka_settings.topic_models}' "
        "to recalibrate"
    )


def test_window_below_the_minimum_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["recalibrate", "--window", str(MIN_CALIBRATION_ROWS - 1)])
    assert f"must be at least {MIN_CALIBRATION_ROWS}" in capsys.readouterr().err
