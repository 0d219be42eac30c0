"""The feedback loop's pure parts: the bounded join, online quality, drift and calibration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from feedback.join import Labelled, OutcomeJoin
from feedback.psi import build_baseline, categorical_distribution, numeric_distribution, psi
from feedback.quality import quality, quality_by_period, quality_by_version, roc_auc
from registry.calibration import apply_calibration
from schemas import (
    FEATURES,
    CallOutcome,
    PredictionRecord,
    ScoreCalibration,
    decode_outcome,
    task_id_for,
)
from schemas.decode import InvalidEvent
from testkit.factories import valid_event
from trainer.synthetic import synthetic_bank_frame

T0 = datetime(2009, 6, 1, tzinfo=UTC)


def prediction(i: int, score: float = 0.5, version: int = 1, days: float = 0) -> PredictionRecord:
    event = valid_event(event_id=f"e{i}")
    features = {k: v for k, v in event.items() if k in FEATURES}
    tier = "high" if score >= 0.6 else "medium" if score >= 0.3 else "low"
    return PredictionRecord(
        event_id=f"e{i}",
        task_id=task_id_for(f"e{i}"),
        prospect_id=f"c{i}",
        occurred_at=T0 + timedelta(days=days),
        features=features,
        score=score,
        priority=tier,
        percentile=50.0,
        model_version=version,
        scored_at=T0,
    )


def outcome(i: int, subscribed: bool, by_task: bool = False, hours: float = 1) -> CallOutcome:
    ref = {"task_id": task_id_for(f"e{i}")} if by_task else {"event_id": f"e{i}"}
    return CallOutcome(
        **ref,
        prospect_id=f"c{i}",
        called_at=T0 + timedelta(hours=hours),
        subscribed=subscribed,
        duration_seconds=120,
    )


def test_join_matches_by_event_or_task_id_and_waits_for_late_predictions():
    join = OutcomeJoin(max_predictions=100, max_age=timedelta(days=30))
    join.add_prediction(prediction(1))
    assert join.add_outcome(outcome(1, True)).prediction.event_id == "e1"
    join.add_prediction(prediction(2))
    assert join.add_outcome(outcome(2, False, by_task=True)).prediction.event_id == "e2"
    assert join.add_outcome(outcome(3, True)) is None  # its prediction has not arrived yet
    assert join.counts.unmatched_waiting == 1
    resolved = join.add_prediction(prediction(3))
    assert [r.prediction.event_id for r in resolved] == ["e3"]
    assert join.counts.unmatched_waiting == 0 and join.counts.matched == 3


def test_join_window_is_bounded_by_count_and_event_time_age():
    join = OutcomeJoin(max_predictions=3, max_age=timedelta(days=10))
    for i in range(5):
        join.add_prediction(prediction(i))
    assert join.add_outcome(outcome(0, True)) is None  # evicted by count
    assert join.add_outcome(outcome(4, True)) is not None
    join.add_prediction(prediction(9, days=20))  # 20 days later: the others are too old
    assert join.add_outcome(outcome(3, True)) is None
    assert join.counts.predictions_expired == 5
    for i in range(10, 15):
        join.add_outcome(outcome(i, True))  # never predicted: the waiting buffer stays bounded
    assert join.counts.unmatched_waiting == 3 and join.counts.outcomes_expired == 4


def test_online_quality_equals_offline_scikit_learn():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 1, 400)
    labels = rng.uniform(0, 1, 400) < scores
    labelled = [
        Labelled(prediction(i, float(s)), outcome(i, bool(y)))
        for i, (s, y) in enumerate(zip(scores, labels, strict=True))
    ]
    result = quality(labelled)
    assert result.roc_auc == pytest.approx(roc_auc_score(labels, scores))
    assert result.brier == pytest.approx(brier_score_loss(labels, scores))
    assert result.mean_score == pytest.approx(scores.mean())
    assert result.observed_rate == pytest.approx(labels.mean())
    high = scores >= 0.6
    assert result.conversion_by_tier["high"].calls == high.sum()
    assert result.conversion_by_tier["high"].rate == pytest.approx(labels[high].mean())
    assert result.conversion_by_tier["high"].rate > result.conversion_by_tier["low"].rate


@pytest.mark.parametrize("seed", range(20))
def test_the_online_auc_equals_scikit_learns_with_ties_and_rare_classes(seed):
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(2, 3000))
    # Coarse scores make ties; a low rate makes a class rare.
    scores = np.round(rng.uniform(0, 1, rows), int(rng.integers(1, 4)))
    labels = rng.uniform(0, 1, rows) < scores * rng.uniform(0.05, 1)
    if 0 < labels.sum() < rows:
        assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    else:
        assert roc_auc(labels, scores) is None


def test_latest_outcome_per_event_wins_and_groups_split_by_version_and_month():
    first = Labelled(prediction(1, 0.9), outcome(1, False, hours=1))
    again = Labelled(prediction(1, 0.9), outcome(1, True, hours=5))
    other = Labelled(prediction(2, 0.2, version=2, days=40), outcome(2, False))
    assert quality([first, again]).positives == 1
    by_version = quality_by_version([first, again, other])
    assert sorted(by_version) == [1, 2] and by_version[2].outcomes == 1
    periods = quality_by_period([first, again, other])
    assert [(q.period, q.model_version) for q in periods] == [("2009-06", 1), ("2009-07", 2)]


def test_psi_is_zero_on_the_training_distribution_and_large_when_shifted():
    rng = np.random.default_rng(1)
    train = rng.normal(0, 1, 5000)
    baseline = numeric_distribution(train)
    assert psi(baseline, rng.normal(0, 1, 5000)) < 0.02
    assert psi(baseline, rng.normal(1.5, 1, 5000)) > 0.5
    jobs = categorical_distribution(["a"] * 50 + ["b"] * 50, ["a", "b"])
    assert psi(jobs, ["a"] * 50 + ["b"] * 50) == pytest.approx(0.0)
    assert psi(jobs, ["c"] * 100) > 1.0  # unseen categories land in 'other'


def test_baseline_covers_every_feature_and_the_score():
    frame = synthetic_bank_frame(rows=800, seed=3)
    baseline = build_baseline(frame[list(FEATURES)], np.linspace(0, 1, 800))
    assert set(baseline.features) == set(FEATURES) and baseline.rows == 800
    assert sum(baseline.score.proportions) == pytest.approx(1.0)


def test_calibration_is_monotone_and_identity_at_slope_one_intercept_zero():
    scores = np.array([0.01, 0.2, 0.5, 0.9])
    identity = ScoreCalibration(slope=1.0, intercept=0.0, outcomes=10)
    assert apply_calibration(scores, identity) == pytest.approx(scores)
    shifted = apply_calibration(scores, ScoreCalibration(slope=1.0, intercept=1.0, outcomes=10))
    assert (np.diff(shifted) > 0).all() and (shifted > scores).all()
    with pytest.raises(ValueError):
        ScoreCalibration(slope=-1.0, intercept=0.0, outcomes=10)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", "empty"),
        (b"{nope", "not_json"),
        (b"[]", "not_object"),
        (b'{"prospect_id": "c", "called_at": "2009-06-01T00:00:00+00:00"}', "invalid_fields"),
    ],
)
def test_bad_outcomes_are_refused_with_a_reason(raw, kind):
    with pytest.raises(InvalidEvent) as excinfo:
        decode_outcome(raw)
    assert excinfo.value.kind == kind


def test_an_outcome_needs_a_reference():
    raw = (
        b'{"prospect_id": "c", "called_at": "2009-06-01T00:00:00+00:00", "subscribed": true,'
        b' "duration_seconds": 3}'
    )
    with pytest.raises(InvalidEvent) as excinfo:
        decode_outcome(raw)
    assert "event_id" in excinfo.value.message


def _reference_join(
    predictions: list[tuple[str, str]], outcomes: list[tuple[str | None, str | None, int, bool]]
) -> list[tuple[str, int]]:
    """The join's rules written plainly (as feedback.labels did before it was vectorised):
    predictions (event, task) in read order; outcomes (event, task, called_at, reached)."""
    by_event: dict[str, str] = {}
    for event, task in predictions:
        by_event.pop(event, None)  # re-inserted last: the last written wins
        by_event[event] = task
    event_of_task = {task: event for event, task in by_event.items()}
    latest: dict[str, tuple[int, int]] = {}  # event -> (called_at, outcome row)
    for row, (event, task, called, reached) in enumerate(outcomes):
        if not reached:
            continue
        matched = event if event in by_event else event_of_task.get(task or "")
        if matched is not None and (matched not in latest or called >= latest[matched][0]):
            latest[matched] = (called, row)
    from schemas import join_key

    ordered = sorted(latest.items(), key=lambda kv: (kv[1][0], join_key(kv[0])))
    return [(event, row) for event, (_called, row) in ordered]


def _join_case(seed: int):
    """Duplicated predictions, re-called events, ties in time, outcomes naming their event by
    task id only, unknown events and unreached calls: as plain tuples and as the join's tables."""
    import pyarrow as pa

    from schemas import join_key

    rng = np.random.default_rng(seed)
    events = [f"e{i}" for i in range(int(rng.integers(1, 30)))]
    predictions = [
        (e, "t-shared" if rng.random() < 0.05 else f"t-{e}")  # a task id two events claim
        for e in rng.choice(events, size=int(rng.integers(0, 60)))
    ]
    outcomes = []
    for _ in range(int(rng.integers(0, 80))):
        event = str(rng.choice([*events, "unknown", "shared"]))
        named = rng.random()
        outcomes.append(
            (
                None if named < 0.2 else event,
                f"t-{event}" if named < 0.5 else None,
                int(rng.integers(0, 5)),  # few distinct times: ties
                bool(rng.random() < 0.7),
            )
        )
    outcomes = [o for o in outcomes if o[0] is not None or o[1] is not None]
    keys = lambda values: pa.array([join_key(v) for v in values], pa.int64())  # noqa: E731
    prediction_table = pa.table(
        {
            "event_key": keys([e for e, _ in predictions]),
            "task_key": keys([t for _, t in predictions]),
            "score": pa.array(rng.random(len(predictions))),
        }
    )
    outcome_table = pa.table(
        {
            "event_key": keys([o[0] for o in outcomes]),
            "task_key": keys([o[1] for o in outcomes]),
            "called_at": pa.array([o[2] for o in outcomes], pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "disposition": ["reached" if o[3] else "no_answer" for o in outcomes],
            "subscribed": [o[3] for o in outcomes],
        }
    )
    return predictions, outcomes, prediction_table, outcome_table


@pytest.mark.parametrize("seed", range(20))
def test_the_columnar_join_follows_the_rules_written_plainly(seed):
    from feedback.label_columns import OUTCOME_ROW, join_labels
    from schemas import join_key

    predictions, outcomes, prediction_table, outcome_table = _join_case(seed)
    got = join_labels(prediction_table, outcome_table)
    expected = _reference_join(predictions, outcomes)
    assert list(got.labelled["event_key"]) == [join_key(e) for e, _ in expected]
    assert list(got.labelled[OUTCOME_ROW]) == [row for _e, row in expected]
    assert got.counts.predictions == len(set(e for e, _ in predictions))


@pytest.mark.parametrize("seed", range(30))
def test_the_join_kept_up_to_date_equals_the_join_of_everything_at_once(seed):
    """Records added a few at a time (a check's new records: outcomes before their
    predictions, re-predictions naming another task) join as all of them at once."""
    import pandas as pd

    from feedback.label_columns import LabelJoin, join_labels

    _p, _o, prediction_table, outcome_table = _join_case(seed)
    rng = np.random.default_rng(1000 + seed)
    pieces = int(rng.integers(2, 6))
    p_cuts = np.sort(rng.integers(0, prediction_table.num_rows + 1, pieces - 1))
    o_cuts = np.sort(rng.integers(0, outcome_table.num_rows + 1, pieces - 1))
    joined = LabelJoin()
    for k in range(pieces):
        p_from, p_to = ([0, *p_cuts][k], [*p_cuts, prediction_table.num_rows][k])
        o_from, o_to = ([0, *o_cuts][k], [*o_cuts, outcome_table.num_rows][k])
        joined.extend(
            prediction_table.slice(p_from, p_to - p_from),
            outcome_table.slice(o_from, o_to - o_from),
        )
        if rng.random() < 0.5:
            joined.result()  # a check in between changes nothing
    got, expected = joined.result(), join_labels(prediction_table, outcome_table)
    pd.testing.assert_frame_equal(got.labelled, expected.labelled)
    pd.testing.assert_frame_equal(got.predictions, expected.predictions)
    assert got.counts == expected.counts
