"""The scheduler's triggers: event-time interval, new outcomes, score drift, online quality, the
recalibration hook, a refused retrain, and the same decision after a restart.

Decisions are pure functions of what the topics hold, so most tests build the observation in
memory; the drift and restart tests read it from the real broker.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from core.errors import BrokerUnavailableError
from feedback.label_columns import LabelColumns
from feedback.labels import label_set
from registry.artifact import ModelArtifact, dump_artifact
from registry.keys import trusted_keys
from registry.model_topic import current_manifest, publish_manifest, read_model_records
from registry.signing import build_manifest
from schemas import (
    FEATURES,
    NUMERIC_FEATURES,
    CallOutcome,
    ModelManifest,
    PredictionRecord,
    join_key,
    task_id_for,
)
from testkit.factories import small_artifact
from testkit.harness import produce
from trainer.schedule import (
    Decision,
    Observation,
    Scheduler,
    TrainAttempt,
    data_until,
    decide,
    observe,
)
from trainer.synthetic import synthetic_bank_frame

DAY = 86_400.0
T0 = datetime(2010, 1, 1, tzinfo=UTC)


# --- builders shared with test_feedback_training ---


def occurred_at(frame: pd.DataFrame) -> list[datetime]:
    """Each row's event time inside its own contact period (day clamped to 28), in file order."""
    return [
        datetime(int(p[:4]), int(p[5:7]), min(int(day), 28), 9, tzinfo=UTC) + timedelta(seconds=i)
        for i, (p, day) in enumerate(zip(frame["period"], frame["day"], strict=True))
    ]


def labelled_records(
    frame: pd.DataFrame,
    version: int,
    scores: Sequence[float],
    prefix: str,
    times: Sequence[datetime] | None = None,
    delay: timedelta = timedelta(days=2),
) -> tuple[list[PredictionRecord], list[CallOutcome]]:
    """What the scorer (version `version`) logged for each row, and each call's outcome."""
    times = list(times) if times is not None else occurred_at(frame)
    rows = frame[[*FEATURES, "duration", "y"]].to_dict(orient="records")
    predictions, outcomes = [], []
    for i, (row, score, at) in enumerate(zip(rows, scores, times, strict=True)):
        event_id = f"{prefix}-{i}"
        features = {k: int(row[k]) if k in NUMERIC_FEATURES else row[k] for k in FEATURES}
        predictions.append(
            PredictionRecord(
                event_id=event_id,
                task_id=task_id_for(event_id),
                prospect_id=f"{prefix}-p{i}",
                occurred_at=at,
                features=features,
                score=float(score),
                priority="high" if score > 0.5 else "low",
                percentile=50.0,
                model_version=version,
                scored_at=at,
            )
        )
        outcomes.append(
            CallOutcome(
                event_id=event_id,
                prospect_id=f"{prefix}-p{i}",
                called_at=at + delay,
                subscribed=row["y"] == "yes",
                duration_seconds=int(row["duration"]),
            )
        )
    return predictions, outcomes


def produce_labels(
    settings,  # type: ignore[no-untyped-def]
    predictions: Sequence[PredictionRecord],
    outcomes: Sequence[CallOutcome | bytes],
) -> None:
    produce(
        settings,
        [(p.event_id.encode(), p.model_dump_json().encode()) for p in predictions],
        settings.topic_predictions,
    )
    produce(
        settings,
        [(None, o if isinstance(o, bytes) else o.model_dump_json().encode()) for o in outcomes],
        settings.topic_outcomes,
    )


def publish(settings, artifact: ModelArtifact, **update: object) -> ModelManifest:  # type: ignore[no-untyped-def]
    """Publish the artifact with updated metadata (in the artifact and its manifest alike)."""
    metadata = artifact.metadata.model_copy(update=update)
    updated = ModelArtifact(artifact.pipeline, metadata)
    manifest = build_manifest(dump_artifact(updated), metadata, settings)
    publish_manifest(settings, manifest)
    return manifest


# --- in-memory observations ---


def served(settings, version: int = 1, **update: object) -> ModelManifest:  # type: ignore[no-untyped-def]
    artifact = small_artifact(version)
    metadata = artifact.metadata.model_copy(update=update)
    return build_manifest(dump_artifact(artifact), metadata, settings)


def observation(
    manifest: ModelManifest | None,
    predictions: Sequence[PredictionRecord],
    outcomes: Sequence[CallOutcome],
) -> Observation:
    labels = label_set(
        [p.model_dump_json().encode() for p in predictions],
        [o.model_dump_json().encode() for o in outcomes],
    )
    return Observation(manifest, labels.columns)


def calls_at(settings, n: int, first: datetime, step: timedelta, version: int = 1, seed: int = 3):  # type: ignore[no-untyped-def]
    frame = synthetic_bank_frame(n, seed=seed).assign(period="2010-01")
    times = [first + i * step for i in range(n)]
    scores = np.linspace(0.05, 0.9, n)
    return labelled_records(frame, version, scores, f"s{seed}", times, delay=timedelta(0))


def test_the_interval_is_event_time(settings):
    settings = settings.model_copy(
        update={"retrain_interval_seconds": 30 * DAY, "retrain_min_new_outcomes": 10_000}
    )
    model = served(settings, labelled_until=T0)
    # 60 calls over 29 days: a month of event time, no retrain yet.
    predictions, outcomes = calls_at(settings, 60, T0 + timedelta(hours=1), timedelta(hours=11.6))
    waiting = decide(settings, observation(model, predictions, outcomes))
    assert waiting.action == "wait" and waiting.signals is not None
    newest = (outcomes[-1].called_at - T0).total_seconds() / DAY
    assert 28 < newest < 30 and waiting.signals.gap_days == pytest.approx(newest)
    # Two more days of calls (read a second later): the interval has passed in event time.
    more_p, more_o = calls_at(settings, 5, T0 + timedelta(days=30.5), timedelta(hours=1), seed=4)
    due = decide(settings, observation(model, predictions + more_p, outcomes + more_o))
    assert due.action == "retrain" and due.triggers[0].startswith("interval: newest outcome 30.")
    assert due.signals is not None and due.signals.new_outcomes == 65
    # Without labelled_until the training window's end (the month after 2010-11) counts.
    old = served(settings)
    assert data_until(old) == datetime(2010, 12, 1, tzinfo=UTC)
    assert decide(settings, observation(old, predictions, outcomes)).action == "wait"


def test_enough_new_outcomes_since_the_training_data(settings):
    settings = settings.model_copy(update={"retrain_min_new_outcomes": 40})
    model = served(settings, labelled_until=T0)
    before_p, before_o = calls_at(settings, 50, T0 - timedelta(days=5), timedelta(minutes=1))
    after_p, after_o = calls_at(settings, 39, T0 + timedelta(days=1), timedelta(minutes=1), seed=5)
    waiting = decide(settings, observation(model, before_p + after_p, before_o + after_o))
    assert waiting.action == "wait" and waiting.signals.new_outcomes == 39  # older ones not counted
    one_p, one_o = calls_at(settings, 1, T0 + timedelta(days=2), timedelta(0), seed=6)
    due = decide(
        settings, observation(model, before_p + after_p + one_p, before_o + after_o + one_o)
    )
    assert due.triggers == ["outcomes: 40 new after the training data (>= 40)"]


def test_online_auc_below_the_floor_retrains(settings):
    settings = settings.model_copy(update={"quality_min_outcomes": 100, "retrain_auc_floor": 0.6})
    # Outcomes older than its data (no interval or count trigger); no baseline (no drift trigger).
    model = served(settings, labelled_until=T0 + timedelta(days=100), drift_baseline=None)
    rng = np.random.default_rng(0)
    frame = synthetic_bank_frame(200, seed=8).assign(period="2010-01")
    times = [T0 + timedelta(minutes=i) for i in range(200)]
    good = np.where(frame["y"] == "yes", 0.7, 0.2) + rng.normal(0, 0.1, 200).clip(-0.15, 0.15)
    p, o = labelled_records(frame, 1, good, "good", times)
    assert decide(settings, observation(model, p, o)).action == "wait"
    p, o = labelled_records(frame, 1, rng.random(200), "noise", times)
    due = decide(settings, observation(model, p, o))
    assert due.action == "retrain" and due.triggers[0].startswith("quality: online ROC-AUC 0.")
    assert due.signals.online_auc < 0.6 and due.signals.labelled == 200
    # Another version's outcomes say nothing about the served one.
    p, o = labelled_records(frame, 7, rng.random(200), "other", times)
    assert decide(settings, observation(model, p, o)).signals.online_auc is None


def test_recalibration_hook_when_no_retrain_is_due(settings):
    settings = settings.model_copy(
        update={"recalibration_min_outcomes": 50, "recalibration_window": 60}
    )
    model = served(settings, labelled_until=T0)
    p, o = calls_at(settings, 80, T0 + timedelta(hours=1), timedelta(minutes=5))
    seen: list[LabelColumns] = []

    def recalibrate(labels: LabelColumns) -> ModelManifest:
        seen.append(labels)
        return served(settings, 2)

    scheduler = Scheduler(
        settings,
        lambda: observation(model, p, o),
        train=lambda reason, labels: pytest.fail("no retrain is due"),
        recalibrate=recalibrate,
    )
    decision = scheduler.step()
    assert decision.action == "recalibrate" and decision.reason.startswith("recalibrate: 80 fresh")
    assert decision.published_version == 2
    # The served version's labelled outcomes, oldest first: the recalibration fits the latest
    # `recalibration_window` of them.
    assert list(seen[0].of_version(1).labelled["event_key"]) == [
        join_key(f"s3-{i}") for i in range(80)
    ]


def test_a_calibration_that_holds_is_not_refitted_and_one_that_is_off_is(settings):
    settings = settings.model_copy(
        update={"recalibration_min_outcomes": 100, "recalibration_window": 150}
    )
    model = served(settings, labelled_until=T0)
    frame = synthetic_bank_frame(200, seed=5).assign(period="2010-01")
    rate = float((frame["y"] == "yes").mean())
    times = [T0 + timedelta(hours=1) + i * timedelta(minutes=5) for i in range(200)]

    def decision_for(score: float) -> Decision:
        p, o = labelled_records(frame, 1, [score] * 200, "cal", times, delay=timedelta(0))
        return decide(settings, observation(model, p, o))

    # Scores at the observed rate: expected and observed conversions agree, nothing to fit.
    holds = decision_for(rate)
    assert holds.action == "wait" and "calibration holds" in holds.reason, holds.line()
    assert holds.signals is not None and holds.signals.calibration is not None
    assert holds.signals.calibration.rows == 150 and abs(holds.signals.calibration.z) < 1
    # The same outcomes under scores a third of the rate (a base rate that tripled).
    off = decision_for(rate / 3)
    threshold = f"|z| > {settings.recalibration_min_z:g}"
    assert off.action == "recalibrate" and threshold in off.reason, off.line()
    # With the test off (0), enough fresh outcomes recalibrate as before.
    plain = settings.model_copy(update={"recalibration_min_z": 0.0})
    p, o = labelled_records(frame, 1, [rate] * 200, "cal", times, delay=timedelta(0))
    assert decide(plain, observation(model, p, o)).action == "recalibrate"


def test_a_refused_retrain_waits_for_new_outcomes_and_pinned_scorers_stop_it(settings):
    settings = settings.model_copy(update={"retrain_min_new_outcomes": 30})
    model = served(settings, labelled_until=T0)
    p, o = calls_at(settings, 30, T0 + timedelta(hours=1), timedelta(minutes=1))
    state = {"obs": observation(model, p, o)}
    reasons: list[str] = []

    def train(reason: str, labels: object) -> TrainAttempt:
        reasons.append(reason)
        return TrainAttempt(None, "candidate worse than champion")

    scheduler = Scheduler(settings, lambda: state["obs"], train, lambda _l: None)
    assert scheduler.step().result == "not published: candidate worse than champion"
    again = scheduler.step()
    assert again.action == "wait" and "the gate kept v1" in again.reason and len(reasons) == 1
    more_p, more_o = calls_at(settings, 30, T0 + timedelta(days=1), timedelta(minutes=1), seed=9)
    state["obs"] = observation(model, p + more_p, o + more_o)
    retry = scheduler.step()
    assert retry.triggers == ["outcomes: 30 new since the refused retrain (>= 30)"]
    pinned = settings.model_copy(update={"pinned_model_version": 1})
    assert decide(pinned, state["obs"]).action == "wait"


def test_broker_errors_are_decisions_not_crashes(settings):
    def down() -> Observation:
        raise BrokerUnavailableError("Kafka did not answer")

    def train(reason: str, labels: object) -> TrainAttempt:
        raise AssertionError("nothing to train on")

    scheduler = Scheduler(settings, down, train, lambda _l: None, sleep=lambda _s: None)
    decisions = scheduler.run(max_runs=2)
    assert [d.action for d in decisions] == ["error", "error"]
    assert all(d.failed and "Kafka did not answer" in d.reason for d in decisions)


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Prospects the model ranks high: previous campaign successes on cellular, no housing loan."""
    return frame.assign(poutcome="success", contact="cellular", housing="no", previous=2, pdays=90)


def test_score_drift_fires_on_shifted_predictions_only(kafka_settings):
    settings = kafka_settings.model_copy(
        update={
            "quality_min_outcomes": 200,
            "retrain_psi_threshold": 0.25,
            # only drift may fire here
            "retrain_interval_seconds": 365 * 86_400.0,
            "retrain_auc_floor": 0.0,
        }
    )
    artifact = small_artifact(1)
    publish(settings, artifact, labelled_until=T0)
    # The baseline was built from seed-101 rows; a fresh sample of the same population matches.
    same = synthetic_bank_frame(400, seed=50).assign(period="2010-01")
    p, o = labelled_records(same, 1, artifact.predict(same), "same")
    produce_labels(settings, p, o)
    steady = decide(settings, observe(settings))
    assert steady.action == "wait" and steady.signals.predictions == 400
    assert steady.signals.score_psi < 0.1 and steady.reason == "no trigger"

    moved = shifted(synthetic_bank_frame(400, seed=51)).assign(period="2010-01")
    p, o = labelled_records(moved, 1, artifact.predict(moved), "moved")
    produce_labels(settings, p, o)
    drifting = decide(settings, observe(settings))
    assert drifting.action == "retrain" and drifting.signals.predictions == 800
    assert drifting.signals.score_psi > 0.25 and drifting.signals.new_outcomes == 800
    assert drifting.triggers == [
        f"drift: score PSI {drifting.signals.score_psi:.3f} over 800 predictions (> 0.25)"
    ]


def test_drift_without_fresh_outcomes_waits_and_says_why(settings):
    settings = settings.model_copy(update={"quality_min_outcomes": 100})
    artifact = small_artifact(1)
    model = served(settings, labelled_until=T0)
    moved = shifted(synthetic_bank_frame(150, seed=13)).assign(period="2010-01")
    predictions, _ = labelled_records(moved, 1, artifact.predict(moved), "m")
    decision = decide(settings, observation(model, predictions, []))
    assert decision.action == "wait" and decision.signals.score_psi > 0.25
    assert decision.reason == (
        f"no trigger; score PSI {decision.signals.score_psi:.3f} drifts, but 0 new outcomes "
        "are too few to learn from (< 100)"
    )


def test_a_restarted_scheduler_decides_the_same(kafka_settings):
    settings = kafka_settings.model_copy(
        update={"retrain_interval_seconds": 20 * DAY, "retrain_min_new_outcomes": 10_000}
    )
    manifest = publish(settings, small_artifact(1), labelled_until=T0)
    p, o = calls_at(settings, 40, T0 + timedelta(days=1), timedelta(hours=12))
    produce_labels(settings, p, [*o, b"not json", json.dumps({"prospect_id": "x"}).encode()])
    published: list[int] = []

    def train(reason: str, labels: object) -> TrainAttempt:
        published.append(manifest.version + 1)
        later = publish(settings, small_artifact(2), labelled_until=o[-1].called_at)
        return TrainAttempt(later, "ok")

    first = Scheduler(settings, lambda: observe(settings), train, lambda _l: None)
    decision, _ = first.check()
    restarted = Scheduler(settings, lambda: observe(settings), train, lambda _l: None)
    assert restarted.check()[0].same_decision() == decision.same_decision()
    assert decision.action == "retrain" and decision.signals.new_outcomes == 40
    assert decision.triggers[0].startswith("interval: newest outcome 20.5 days")
    assert first.step().published_version == 2 and published == [2]
    # After the retrain both see v2, trained up to the newest outcome: nothing is due.
    after = [
        s.check()[0] for s in (first, Scheduler(settings, first.observe, train, first.recalibrate))
    ]
    assert [d.action for d in after] == ["wait", "wait"]
    assert after[0].same_decision() == after[1].same_decision()
    assert after[0].signals.served_version == 2 and after[0].signals.new_outcomes == 0


def test_the_hook_publishes_a_recalibrated_version(kafka_settings, tmp_path):
    # The test of the calibration off (a calibrated model: nothing would be fitted); the hook
    # itself is what is tested here.
    settings = kafka_settings.model_copy(
        update={"recalibration_min_outcomes": 60, "recalibration_min_z": 0.0}
    )
    artifact = small_artifact(1)
    publish(settings, artifact, labelled_until=T0)
    frame = synthetic_bank_frame(80, seed=12).assign(period="2010-01")
    times = [T0 + timedelta(hours=1 + i) for i in range(80)]
    predictions, outcomes = labelled_records(frame, 1, artifact.predict(frame), "c", times)
    produce_labels(settings, predictions, outcomes)
    scheduler = Scheduler.for_cli(settings, None, tmp_path / "runs")
    decision = scheduler.step()
    assert decision.action == "recalibrate" and decision.published_version == 2, decision.line()
    v2 = current_manifest(read_model_records(settings), settings.model_name, trusted_keys(settings))
    assert v2 is not None and v2.calibration is not None and v2.calibration.outcomes == 80
    assert v2.labelled_until == T0  # the retrain clock is not reset by a recalibration
    assert scheduler.step().action == "wait"  # v2 has no outcomes of its own yet


def test_a_refused_drift_retrain_is_not_repeated(settings):
    settings = settings.model_copy(
        update={"quality_min_outcomes": 100, "retrain_interval_seconds": 365 * 86_400.0}
    )
    artifact = small_artifact(1)
    model = served(settings, labelled_until=T0)
    moved = shifted(synthetic_bank_frame(150, seed=13)).assign(period="2010-01")
    predictions, outcomes = labelled_records(moved, 1, artifact.predict(moved), "m")
    reasons: list[str] = []

    def train(reason: str, labels: object) -> TrainAttempt:
        reasons.append(reason)
        return TrainAttempt(None, "not better")

    scheduler = Scheduler(
        settings, lambda: observation(model, predictions, outcomes), train, lambda _l: None
    )
    assert scheduler.step().triggers[0].startswith("drift: score PSI")
    assert scheduler.step().action == "wait" and len(reasons) == 1
