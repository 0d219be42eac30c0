"""Training on fresh outcomes (real broker): the base data cut at base_data_until, the replayed
months appended as labelled outcomes, the gate on the newest labelled window, and the scheduler
retraining on them and publishing a version a running scorer switches to.

Synthetic data and the reference configuration (no search): each training takes seconds; never
read model quality from these numbers.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pandas as pd
import pytest

from callscore.cli import main
from core.kafka import ensure_topics
from registry.keys import trusted_keys
from registry.model_topic import current_manifest, read_model_records
from registry.signing import verify_and_load
from schemas import CallOutcome, TrainingWindow
from testkit.factories import valid_event
from testkit.harness import collect, event_bytes, produce, worker_settings
from tests.test_schedule import labelled_records, produce_labels
from trainer.data import add_periods, validate_frame
from trainer.gate import NEWEST_WINDOW_MIN_ROWS, gate, newest_window, roc_auc
from trainer.schedule import Scheduler
from trainer.synthetic import synthetic_bank_frame
from trainer.train import TrainOptions, run_training

# Synthetic 2500 rows span 2008-05..2010-11; the trailing ~1000 rows (the holdout) start here.
BASE_UNTIL = "2009-11"
DAY = 86_400


@pytest.fixture(scope="module")
def bank() -> pd.DataFrame:
    return add_periods(validate_frame(synthetic_bank_frame(2500, seed=11)))


def options(tmp_path, name, **kw):  # type: ignore[no-untyped-def]
    return TrainOptions(out=tmp_path / name, reference=True, importance_rows=300, n_jobs=1, **kw)


def replay_labels(settings, bank, version: int, artifact):  # type: ignore[no-untyped-def]
    """The months from BASE_UNTIL on as the scorer logged them and the dialers reported them;
    plus two invalid outcomes, one whose event was never scored, and one event called twice."""
    replay = bank.loc[bank["period"] >= BASE_UNTIL].reset_index(drop=True)
    predictions, outcomes = labelled_records(replay, version, artifact.predict(replay), "r")
    first = outcomes[0]
    earlier = first.model_copy(
        update={"subscribed": not first.subscribed, "called_at": first.called_at - timedelta(1)}
    )
    stray = CallOutcome(
        event_id="never-scored",
        prospect_id="x",
        called_at=first.called_at,
        subscribed=True,
        duration_seconds=1,
    )
    extras = [earlier, stray, b"not json", json.dumps({"event_id": "r-1"}).encode()]
    produce_labels(settings, predictions, [*extras, *outcomes])
    return replay, outcomes


def test_training_appends_replayed_months_and_gates_on_them(kafka_settings, bank, tmp_path):
    settings = kafka_settings.model_copy(update={"base_data_until": BASE_UNTIL})
    base = run_training(settings, bank, "0" * 64, options(tmp_path, "base", outcomes=False))
    v1 = base.manifest
    assert v1 is not None and v1.training_window.end < BASE_UNTIL
    assert v1.labelled_until is None and v1.reason == "callscore train"
    assert base.card.sources is not None and not base.card.sources.outcomes_read
    replay, outcomes = replay_labels(settings, bank, 1, base.artifact)

    fresh = run_training(settings, bank, "0" * 64, options(tmp_path, "fresh"))
    v2, card = fresh.manifest, fresh.card
    assert v2 is not None and v2.version == 2
    # The replayed months are in, nothing twice: as many rows as the file.
    assert v2.training_window == TrainingWindow(start="2008-05", end="2010-11", rows=len(bank))
    assert v2.labelled_until == max(o.called_at for o in outcomes)
    sources = card.sources
    assert sources is not None
    assert sources.base_rows == int((bank["period"] < BASE_UNTIL).sum())
    assert sources.base_periods[-1] < BASE_UNTIL <= sources.outcome_periods[0]
    assert sources.outcome_rows == len(replay)
    assert sources.outcome_periods == sorted(set(replay["period"]))
    assert (sources.invalid_outcomes, sources.unmatched_outcomes) == (2, 1)
    assert sources.overlapping_periods == []
    # The holdout (trailing periods) and the backtest extend over the new periods by themselves.
    assert card.holdout.periods == sources.outcome_periods
    assert "2010-11" in [month.period for month in card.backtest_per_month]
    # The re-called event keeps its latest call: the labels are exactly the replayed file's.
    assert int(fresh.final.holdout_y.sum()) == int((replay["y"] == "yes").sum())
    # Champion v1 never saw these months: both are scored on them.
    decision = fresh.decision
    assert decision is not None and decision.publish and decision.rule == "newest_window"
    assert decision.window_periods == card.holdout.periods
    assert decision.window_rows == card.holdout.rows and decision.champion_version == 1
    assert "newest labelled rows" in decision.reason
    # Decided on the paired bootstrap interval of the difference, recorded with the version.
    difference = decision.difference
    assert difference is not None and difference.rows == decision.window_rows
    assert difference.low <= difference.value <= difference.high
    assert "interval [" in decision.reason and "not worse beyond the interval" in decision.reason
    assert v2.metrics["gate_roc_auc_difference"] == difference.value

    # No newer window (the champion saw every month): the champion's recorded holdout AUC.
    champion = verify_and_load(v2, settings)
    same = gate(settings, (v2, champion), fresh.final, force=False)
    assert same.rule == "recorded_holdout" and same.window_rows == 0
    assert same.champion_roc_auc == v2.metrics["holdout_roc_auc"]
    # A newer window of one month (< NEWEST_WINDOW_MIN_ROWS rows) is too small to decide on.
    shorter = v2.model_copy(
        update={"training_window": v2.training_window.model_copy(update={"end": "2010-10"})}
    )
    too_few = gate(settings, (shorter, champion), fresh.final, False)
    assert too_few.rule == "too_few_new_rows" and not too_few.publish
    assert too_few.window_rows == int((fresh.final.holdout["period"] > "2010-10").sum())
    assert too_few.champion_roc_auc is None  # no number from another holdout is compared
    assert gate(settings, (shorter, champion), fresh.final, True).publish  # --force
    # A champion that saw the holdout's first month: its data reaches past the holdout pipeline's,
    # so the candidate is refitted on exactly the rows before the window, not the older pipeline.
    first = card.holdout.periods[0]
    longer = v2.model_copy(
        update={"training_window": v2.training_window.model_copy(update={"end": first})}
    )
    window = newest_window(fresh.final, first)
    rows, y = fresh.final.holdout.loc[window], fresh.final.holdout_y[window]
    assert len(rows) >= NEWEST_WINDOW_MIN_ROWS and rows["period"].min() > first
    refitted = gate(settings, (longer, champion), fresh.final, False)
    assert refitted.rule == "newest_window" and refitted.window_rows == len(rows)
    expected = roc_auc(y, fresh.final.scores_fitted_before(rows))
    assert refitted.candidate_roc_auc == pytest.approx(expected, abs=1e-12)
    assert refitted.candidate_roc_auc != pytest.approx(
        roc_auc(y, fresh.final.holdout_scores[window])
    )


def test_cli_trains_on_the_outcomes_and_lists_reasons(
    kafka_settings, bank, tmp_path, monkeypatch, capsys
):
    settings = kafka_settings.model_copy(update={"base_data_until": BASE_UNTIL})
    base = run_training(settings, bank, "0" * 64, options(tmp_path, "base", outcomes=False))
    replay, _ = replay_labels(settings, bank, 1, base.artifact)
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    data = tmp_path / "bank.csv"
    bank.drop(columns=["year", "period"]).to_csv(data, sep=";", index=False)
    out = tmp_path / "cli"
    args = ["train", "--data", str(data), "--out", str(out), "--search", "reference"]
    assert main([*args, "--no-publish"]) == 0
    sources = json.loads((out / "metrics.json").read_text())["sources"]
    assert sources["outcome_rows"] == len(replay) and sources["base_data_until"] == BASE_UNTIL
    assert f"outcomes: {len(replay)} labelled rows of 2009-11..2010-11" in capsys.readouterr().err
    # One scheduled decision: the replayed months are weeks newer than v1's data (interval).
    runs = tmp_path / "runs"
    assert main(["schedule", "--once", "--data", str(data), "--out", str(runs)]) == 0
    assert len(list(runs.glob("*/metrics.json"))) == 1
    assert main(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert "reason" in listing and "callscore train" in listing
    assert "interval: newest outcome" in listing  # v2's reason: the trigger that retrained it
    # v2's gate: its AUC difference to v1 on the same rows, and the interval.
    assert "gate AUC diff" in listing
    assert re.search(r"[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]", listing), listing


def test_scheduler_retrains_on_replayed_outcomes_and_publishes(kafka_settings, bank, tmp_path):
    settings = kafka_settings.model_copy(
        update={
            "base_data_until": BASE_UNTIL,
            "retrain_interval_seconds": 30 * DAY,
            "retrain_min_new_outcomes": 100_000,
        }
    )
    data = tmp_path / "bank.csv"
    bank.drop(columns=["year", "period"]).to_csv(data, sep=";", index=False)
    scheduler = Scheduler.for_cli(settings, str(data), tmp_path / "runs", search="reference")
    first = scheduler.step()
    assert (first.action, first.reason, first.published_version) == (
        "retrain",
        "no served model",
        1,
    )
    v1 = current_manifest(read_model_records(settings), settings.model_name, trusted_keys(settings))
    assert v1 is not None and v1.reason == "no served model" and v1.labelled_until is None
    assert scheduler.step().action == "wait"

    _replay, outcomes = replay_labels(settings, bank, 1, verify_and_load(v1, settings))
    decision = scheduler.step()
    assert decision.action == "retrain" and decision.published_version == 2, decision.line()
    assert decision.triggers[0].startswith("interval: newest outcome ")
    v2 = current_manifest(read_model_records(settings), settings.model_name, trusted_keys(settings))
    assert v2 is not None and v2.version == 2 and v2.reason == decision.reason
    assert v2.training_window.end == "2010-11" and v2.training_window.rows == len(bank)
    assert v2.labelled_until == max(o.called_at for o in outcomes)
    after = scheduler.step()
    assert after.action == "wait" and after.signals is not None
    assert after.signals.served_version == 2 and after.signals.new_outcomes == 0


def test_a_running_scorer_switches_to_the_retrained_version(
    kafka_settings, bank, tmp_path, workers
):
    settings = worker_settings(
        kafka_settings.model_copy(
            update={"base_data_until": BASE_UNTIL, "retrain_interval_seconds": 30 * DAY}
        ),
        tmp_path,
    )
    ensure_topics(settings)
    base = run_training(settings, bank, "0" * 64, options(tmp_path, "base", outcomes=False))
    worker = workers(settings)
    worker.wait_ready()

    def serving() -> int:
        return worker.served_version()

    worker.wait_until(lambda: serving() == 1, 30, "v1 served")
    replay_labels(settings, bank, 1, base.artifact)
    data = tmp_path / "bank.csv"
    bank.drop(columns=["year", "period"]).to_csv(data, sep=";", index=False)
    scheduler = Scheduler.for_cli(settings, str(data), tmp_path / "runs", search="reference")
    assert scheduler.step().published_version == 2
    worker.wait_until(lambda: serving() == 2, 30, "the retrained v2 served")
    produce(settings, [event_bytes(valid_event(event_id="after-retrain"))])
    tasks = collect(settings, settings.task_topics.values(), lambda r: len(r) >= 1, timeout=30)
    assert [t.json()["model_version"] for t in tasks] == [2]


def test_labels_from_the_lake_equal_the_labels_from_kafka(kafka_settings, bank, tmp_path):
    """`callscore train --outcomes-from-lake URL` trains on exactly what the topics hold."""
    from datetime import UTC, datetime

    from lake.export import export_day
    from trainer.history import read_labels

    rows = bank.iloc[:120]
    predictions, outcomes = labelled_records(rows, 1, [0.2] * len(rows), "lake")
    produce_labels(kafka_settings, predictions, [*outcomes, b"not json"])
    url = str(tmp_path / "lake")
    export_day(kafka_settings, datetime.now(UTC).date(), url=url)  # records carry today's time

    from_kafka = read_labels(kafka_settings)  # its own lake (isolated_settings) is empty
    from_lake = read_labels(kafka_settings, url)
    assert len(from_lake.labelled) == len(from_kafka.labelled) == len(rows)
    assert from_lake.counts == from_kafka.counts and from_lake.counts.invalid_outcomes == 1
    key = sorted((i.prediction.event_id, i.subscribed) for i in from_lake.labelled)
    assert key == sorted((i.prediction.event_id, i.subscribed) for i in from_kafka.labelled)


def test_the_labelled_history_is_the_lake_plus_the_topics_tail_each_record_once(
    kafka_settings, bank, tmp_path
):
    """Exported days from the lake, then what the topics hold beyond them: a record exported and
    still on its topic counts once, and what the topics no longer hold still counts."""
    from datetime import UTC, datetime

    from lake.export import export_day
    from trainer.history import read_labels

    rows = bank.iloc[:90]
    predictions, outcomes = labelled_records(rows, 1, [0.2] * len(rows), "history")
    produce_labels(kafka_settings, predictions[:60], outcomes[:60])
    export_day(kafka_settings, datetime.now(UTC).date())  # into Settings.export_url
    produce_labels(kafka_settings, predictions[60:], outcomes[60:])

    history = read_labels(kafka_settings)
    assert len(history.labelled) == 90, "60 exported (and still on the topics) + 30 of the tail"
    # counted once: labels are one per event anyway, but the records read are counted
    assert (history.counts.outcomes, history.counts.matched) == (90, 90)
    # After retention: topics holding only the newest records, the lake the rest.
    expired = kafka_settings.model_copy(
        update={
            "topic_predictions": f"{kafka_settings.topic_predictions}-after-retention",
            "topic_outcomes": f"{kafka_settings.topic_outcomes}-after-retention",
        }
    )
    produce_labels(expired, predictions[60:], outcomes[60:])
    assert len(read_labels(expired).labelled) == 90
    assert len(read_labels(expired, expired.export_url).labelled) == 60  # the lake alone
