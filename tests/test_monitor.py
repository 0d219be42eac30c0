"""The prediction log and the monitor: the pure core without a broker, then `callscore stream`
and `callscore monitor` against a real one."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from confluent_kafka import OFFSET_END, KafkaError, TopicPartition
from sklearn.metrics import brier_score_loss, roc_auc_score

from callscore.simulator.events import events_from_frame
from core.errors import BrokerUnavailableError
from core.kafka import ensure_topics, producer_config
from core.local_broker import free_port
from core.settings import Settings
from core.topic_reader import (
    Record,
    TopicReader,
    offsets_at,
    offsets_by_time,
    read_topics,
    start_offsets,
)
from feedback.join import Labelled
from feedback.psi import feature_psi, psi
from feedback.quality import latest_per_event, quality
from monitor.metrics import MonitorMetrics
from monitor.online import VERSIONS_TRACKED, Monitor, MonitorAccountingError, MonitorResult
from monitor.worker import restart_window_start
from registry.artifact import dump_artifact
from registry.keys import trusted_keys
from registry.model_topic import produce_manifest
from registry.signing import build_manifest
from schemas import FEATURES, PRIORITIES, CallOutcome, DeadLetter, PredictionRecord, task_id_for
from testkit.factories import small_artifact
from testkit.harness import (
    MonitorWorker,
    collect,
    event_bytes,
    produce,
    publish_model,
    worker_settings,
)
from trainer.synthetic import synthetic_bank_frame

T0 = datetime(2009, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 26, tzinfo=UTC)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Every kind of invalid outcome the monitor must dead-letter (never count as a label).
GOOD_OUTCOME = {
    "event_id": "x",
    "prospect_id": "c",
    "called_at": "2009-05-01T10:00:00+00:00",
    "subscribed": True,
    "duration_seconds": 60,
}
BAD_OUTCOMES: dict[str, bytes] = {
    "empty": b"",
    "not_json": b"{oops",
    "not_object": b"[1]",
    "not_utf8": b"\xff\xfe{}",
    "too_large": b"y" * 4096,
    "invalid_fields": json.dumps({**GOOD_OUTCOME, "subscribed": "yes"}).encode(),
}
NO_REFERENCE = json.dumps({k: v for k, v in GOOD_OUTCOME.items() if k != "event_id"}).encode()


def tier(score: float) -> str:
    return "high" if score >= 0.7 else "medium" if score >= 0.4 else "low"


def predictions(count: int, version: int, seed: int, prefix: str) -> list[PredictionRecord]:
    """Known scores on real-looking features, spread over several event months."""
    rng = np.random.default_rng(seed)
    events = events_from_frame(synthetic_bank_frame(rows=count, seed=seed), prefix=prefix)
    records = []
    for i, event in enumerate(events):
        score = float(rng.uniform(0.01, 0.99))
        records.append(
            PredictionRecord(
                event_id=event["event_id"],
                task_id=task_id_for(event["event_id"]),
                prospect_id=event["prospect_id"],
                occurred_at=T0 + timedelta(days=i * 50 / count),  # within the 60-day join window
                features={name: event[name] for name in FEATURES},
                score=score,
                priority=tier(score),
                percentile=score * 100,
                model_version=version,
                scored_at=NOW,
            )
        )
    return records


def outcome(
    prediction: PredictionRecord, subscribed: bool, by_task: bool = False, hours: float = 24
) -> CallOutcome:
    ref = {"task_id": prediction.task_id} if by_task else {"event_id": prediction.event_id}
    return CallOutcome(
        **ref,
        prospect_id=prediction.prospect_id,
        called_at=prediction.occurred_at + timedelta(hours=hours),
        subscribed=subscribed,
        duration_seconds=90,
    )


def labels_for(preds: list[PredictionRecord], seed: int) -> list[bool]:
    rng = np.random.default_rng(seed)
    return [bool(rng.random() < p.score) for p in preds]


class Topics:
    """Records as a TopicReader returns them, with per-topic offsets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.offsets: dict[str, int] = defaultdict(int)

    def record(self, topic: str, value: bytes | None, key: bytes | None = None) -> Record:
        offset = self.offsets[topic]
        self.offsets[topic] += 1
        return Record(topic, offset % 2, offset, key, value, {}, 0)

    def prediction(self, p: PredictionRecord) -> Record:
        return self.record(self.settings.topic_predictions, p.model_dump_json().encode())

    def outcome(self, value: bytes | CallOutcome) -> Record:
        raw = value.model_dump_json().encode() if isinstance(value, CallOutcome) else value
        return self.record(self.settings.topic_outcomes, raw, b"k")


def offline(rows: list[Labelled]) -> dict[str, Any]:
    """The same numbers computed directly with scikit-learn: one label per event (latest call)."""
    rows = latest_per_event(rows)
    y = np.array([r.subscribed for r in rows])
    s = np.array([r.prediction.score for r in rows])
    tiers = {}
    for t in PRIORITIES:
        mask = np.array([r.prediction.priority == t for r in rows])
        tiers[t] = float(y[mask].mean()) if mask.any() else math.nan
    return {
        "outcomes": len(rows),
        "roc_auc": float(roc_auc_score(y, s)),
        "brier": float(brier_score_loss(y, s)),
        "mean_score": float(s.mean()),
        "observed_rate": float(y.mean()),
        "tiers": tiers,
    }


# --- the pure core -----------------------------------------------------------------------------
def test_handle_joins_counts_and_dead_letters_every_bad_outcome(settings):
    settings = settings.model_copy(update={"max_message_bytes": 2048})
    monitor = Monitor(settings, trusted_keys(settings))
    topics = Topics(settings)
    v1 = predictions(6, version=1, seed=1, prefix="a")
    early = [topics.outcome(outcome(v1[0], True)), topics.outcome(outcome(v1[1], False, True))]
    unknown = topics.outcome(CallOutcome(event_id="nobody", **_rest()))
    bad = {kind: topics.outcome(raw) for kind, raw in BAD_OUTCOMES.items()}
    no_ref = topics.outcome(NO_REFERENCE)

    first = monitor.handle([*early, unknown, *bad.values(), no_ref], NOW)

    c = first.counts
    assert (c.outcomes, c.matched_on_arrival, c.unmatched_on_arrival) == (10, 0, 3)
    assert dict(c.dead_lettered) == {
        **{kind: 1 for kind in BAD_OUTCOMES if kind != "invalid_fields"},
        "invalid_fields": 2,
    }
    assert first.waiting == 3 and first.labelled == []
    by_offset = {letter.source_offset: letter for letter in first.dead_letters}
    for kind, record in bad.items():
        assert by_offset[record.offset].error_kind == kind
        assert by_offset[record.offset].source_topic == settings.topic_outcomes
    assert [fe.field for fe in by_offset[bad["invalid_fields"].offset].field_errors] == [
        "subscribed"
    ]
    assert "event_id" in by_offset[no_ref.offset].message  # names the missing reference
    assert by_offset[bad["too_large"].offset].payload_truncated
    assert first.new == first.dead_letters
    for letter, record in zip(first.new, first.outgoing, strict=True):
        assert record.topic == settings.topic_outcome_dead_letters
        assert record.key == b"k"
        assert record.headers == [("error_kind", letter.error_kind.encode())]
        assert DeadLetter.model_validate_json(record.value) == letter

    second = monitor.handle(
        [topics.prediction(p) for p in v1] + [topics.outcome(outcome(v1[2], True))], NOW
    )

    c = second.counts
    assert (c.predictions, c.matched_late, c.matched_on_arrival, c.outcomes) == (6, 2, 1, 1)
    assert {item.prediction.event_id for item in second.labelled} == {"a-0", "a-1", "a-2"}
    assert second.waiting == 1 and second.predictions_in_window == 6
    assert second.outgoing == []

    # a restarted monitor reads the same outcomes again: counted, but not published twice
    published = {(d.source_topic, d.source_partition, d.source_offset) for d in first.new}
    again = Monitor(settings, trusted_keys(settings), published)
    replay = again.handle([*early, unknown, *bad.values(), no_ref], NOW)
    assert sum(replay.counts.dead_lettered.values()) == 7
    assert replay.new == [] and replay.outgoing == []


def test_calls_that_did_not_reach_the_prospect_are_counted_never_labels(settings):
    monitor = Monitor(settings, trusted_keys(settings))
    topics = Topics(settings)
    (p,) = predictions(1, version=1, seed=3, prefix="n")
    called = p.occurred_at + timedelta(hours=1)
    unanswered = [
        topics.outcome(
            CallOutcome(
                event_id=p.event_id, prospect_id=p.prospect_id, called_at=called, disposition=d
            )
        )
        for d in ("no_answer", "busy", "voicemail", "wrong_number", "do_not_call")
    ]
    result = monitor.handle([topics.prediction(p), *unanswered], NOW)

    assert (result.counts.outcomes, result.counts.not_reached) == (5, 5)
    assert result.labelled == [] and result.waiting == 0


def _rest() -> dict[str, Any]:
    return {"prospect_id": "c", "called_at": T0, "subscribed": True, "duration_seconds": 1}


def test_a_result_that_loses_an_outcome_is_refused(settings):
    monitor = Monitor(settings, trusted_keys(settings))
    topics = Topics(settings)
    good = monitor.handle(
        [topics.outcome(b"{"), topics.outcome(outcome(predictions(1, 1, 1, "z")[0], True))], NOW
    )
    fields = {name: getattr(good, name) for name in MonitorResult.__dataclass_fields__}
    assert MonitorResult(**fields).counts.outcomes == 2
    lost = type(good.counts)(**{**good.counts.__dict__, "outcomes": 3})
    with pytest.raises(MonitorAccountingError, match="3 outcomes != dead-lettered 1"):
        MonitorResult(**{**fields, "counts": lost})
    with pytest.raises(MonitorAccountingError, match="1 dead letters"):
        MonitorResult(**{**fields, "outgoing": []})


def test_quality_windows_are_bounded_per_version_and_equal_offline(settings):
    settings = settings.model_copy(
        update={"monitor_quality_window": 50, "quality_min_outcomes": 10}
    )
    monitor = Monitor(settings, trusted_keys(settings))
    topics = Topics(settings)
    v1, v2 = predictions(80, 1, seed=3, prefix="a"), predictions(30, 2, seed=4, prefix="b")
    y1, y2 = labels_for(v1, 5), labels_for(v2, 6)
    records = [topics.prediction(p) for p in v1 + v2]
    records += [
        topics.outcome(outcome(p, y, by_task=i % 2 == 0))
        for i, (p, y) in enumerate(zip(v1, y1, strict=True))
    ]
    records += [topics.outcome(outcome(p, y)) for p, y in zip(v2, y2, strict=True)]
    # a re-call of b-0 with the opposite result: the latest call is its label
    records.append(topics.outcome(outcome(v2[0], not y2[0], hours=48)))

    monitor.handle(records, NOW)
    online = monitor.quality()

    last_50 = [
        Labelled(p, outcome(p, y, by_task=i % 2 == 0))
        for i, (p, y) in enumerate(zip(v1, y1, strict=True))
    ][-50:]
    expected = offline(last_50)
    assert online[1].outcomes == 50 and online[1].predictions == 50  # the windows, not 80
    assert online[1].roc_auc == pytest.approx(expected["roc_auc"], abs=1e-12)
    assert online[1].brier == pytest.approx(expected["brier"], abs=1e-12)
    v2_rows = [Labelled(p, outcome(p, y)) for p, y in zip(v2, y2, strict=True)]
    v2_rows.append(Labelled(v2[0], outcome(v2[0], not y2[0], hours=48)))
    assert online[2].outcomes == 30
    assert online[2].observed_rate == pytest.approx(offline(v2_rows)["observed_rate"], abs=1e-12)
    assert online[2].score_psi is None  # no trusted baseline for these versions

    # only the most recently active versions keep a window
    for version in range(3, 3 + VERSIONS_TRACKED):
        monitor.handle([topics.prediction(predictions(1, version, 10, f"v{version}")[0])], NOW)
    assert sorted(monitor.quality()) == list(range(3, 3 + VERSIONS_TRACKED))


def test_drift_baselines_come_only_from_signed_manifests_of_the_model(settings):
    settings = settings.model_copy(update={"quality_min_outcomes": 10})
    monitor = Monitor(settings, trusted_keys(settings))
    topics = Topics(settings)
    artifact = small_artifact(1, seed=1)
    signed = build_manifest(dump_artifact(artifact), artifact.metadata, settings)
    forged = signed.model_copy(update={"version": 2})  # v1's signature on another version
    other = signed.model_copy(update={"model_name": "another-model", "version": 3})
    manifests = [signed, forged, other]
    records = [
        topics.record(settings.topic_models, m.model_dump_json().encode()) for m in manifests
    ]
    records.append(topics.record(settings.topic_models, b"{not a manifest"))
    preds = predictions(40, 1, seed=8, prefix="a") + predictions(40, 2, seed=9, prefix="b")
    records += [topics.prediction(p) for p in preds]

    result = monitor.handle(records, NOW)

    assert dict(result.counts.manifests) == {
        ("trusted", "verified"): 1,
        ("rejected", "signature"): 1,
        ("ignored", "other_model"): 1,
        ("rejected", "malformed"): 1,
    }
    assert set(monitor.baselines) == {1}
    online = monitor.quality()
    baseline = artifact.metadata.drift_baseline
    assert baseline is not None
    v1 = [p for p in preds if p.model_version == 1]
    assert online[1].score_psi == pytest.approx(
        psi(baseline.score, [p.score for p in v1]), abs=1e-12
    )
    assert online[1].feature_psi == pytest.approx(feature_psi(baseline, [p.features for p in v1]))
    assert online[2].score_psi is None and online[2].feature_psi == {}


def test_metrics_follow_results_and_forget_untracked_versions(settings):
    monitor = Monitor(settings, trusted_keys(settings))
    topics = Topics(settings)
    preds = predictions(20, 1, seed=2, prefix="a")
    ys = labels_for(preds, 3)
    result = monitor.handle(
        [topics.prediction(p) for p in preds]
        + [topics.outcome(outcome(p, y)) for p, y in zip(preds, ys, strict=True)]
        + [topics.outcome(b""), topics.outcome(CallOutcome(event_id="late", **_rest()))],
        NOW,
    )
    metrics = MonitorMetrics()
    value = metrics.registry.get_sample_value

    metrics.record(result)
    metrics.record_quality(monitor.quality())

    assert value("callscore_outcomes_consumed_total") == 22
    assert value("callscore_outcomes_matched_total") == 20
    assert value("callscore_outcomes_unmatched_total") == 1
    assert value("callscore_outcomes_waiting") == 1
    assert value("callscore_outcomes_dead_lettered_total", {"reason": "empty"}) == 1
    assert value("callscore_online_predictions_in_window") == 20
    v1 = {"model_version": "1"}
    expected = offline([Labelled(p, outcome(p, y)) for p, y in zip(preds, ys, strict=True)])
    assert value("callscore_online_roc_auc", v1) == pytest.approx(expected["roc_auc"], abs=1e-12)
    assert math.isnan(value("callscore_online_score_psi", v1))  # no baseline: NaN, not 0
    metrics.record_quality({})
    assert value("callscore_online_roc_auc", v1) is None
    assert value("callscore_online_conversion_rate", {**v1, "priority": "high"}) is None


@dataclass(frozen=True)
class TimeAnswer:
    """One partition of an offsets_for_times answer with an error (a TopicPartition's `error`
    cannot be set outside the client)."""

    topic: str
    partition: int
    offset: int
    error: KafkaError | None


def test_a_reader_from_a_time_starts_each_partition_where_offsets_for_times_answered():
    found = [TopicPartition("p", 0, 7), TopicPartition("p", 1, -1), TopicPartition("p", 2, 0)]
    assert start_offsets(found) == {("p", 0): 7, ("p", 1): OFFSET_END, ("p", 2): 0}
    assert offsets_by_time(found) == {("p", 0): 7, ("p", 1): None, ("p", 2): 0}  # offsets_at's
    failed = [*found, TimeAnswer("p", 3, -1, KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))]
    with pytest.raises(BrokerUnavailableError) as raised:
        start_offsets(failed)
    message = str(raised.value)
    assert message.startswith("finding offsets by time in 'p' [3]: "), message
    assert "\n" not in message and "leader" in message.lower(), message


def test_a_restart_reads_the_prediction_log_and_the_outcomes_from_the_lookback(settings):
    assert settings.monitor_window_max_age_days == 60
    start_ms = int((NOW - timedelta(days=60)).timestamp() * 1000)
    assert restart_window_start(settings, NOW) == {
        settings.topic_predictions: start_ms,
        settings.topic_outcomes: start_ms,
    }  # the model topic is read whole
    shorter = settings.model_copy(update={"monitor_window_max_age_days": 0.5})
    assert set(restart_window_start(shorter, NOW).values()) == {start_ms + int(59.5 * DAY_MS)}


# --- against a real broker ----------------------------------------------------------------------
def test_stream_writes_one_prediction_record_per_task(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1)
    events = events_from_frame(synthetic_bank_frame(rows=60, seed=11), prefix="log")
    produce(settings, [event_bytes(e) for e in events])

    workers(settings).wait_ready()
    tiers = list(settings.task_topics.values())
    tasks = collect(settings, tiers, lambda r: len(r) >= len(events), timeout=60, settle=0.5)
    logged = collect(
        settings, [settings.topic_predictions], lambda r: len(r) >= len(events), 30, settle=0.5
    )

    assert len(tasks) == len(logged) == len(events)
    task_of = {t.json()["event_id"]: t.json() for t in tasks}
    for record in logged:
        prediction = PredictionRecord.model_validate_json(record.value or b"")
        task = task_of.pop(prediction.event_id)
        assert prediction.score == task["score"] and prediction.model_version == 1
        assert (prediction.priority, prediction.percentile) == (
            task["priority"],
            task["percentile"],
        )
        assert prediction.task_id == task["task_id"] == record.headers["task_id"].decode()
        assert (
            record.key == prediction.event_id.encode() and record.headers["model_version"] == b"1"
        )
    assert task_of == {}  # every task has exactly one prediction record
    event = events[7]
    prediction = next(
        PredictionRecord.model_validate_json(r.value or b"")
        for r in logged
        if r.key == event["event_id"].encode()
    )
    assert prediction.features == {name: event[name] for name in FEATURES}
    assert prediction.occurred_at == datetime.fromisoformat(event["occurred_at"])


def test_a_reader_from_a_time_reads_from_the_brokers_answer(kafka_settings, kafka_broker):
    """A topic in start_at_ms starts where offsets_for_times answers (every record stamped at
    or after the time is read); another topic is read whole. Tansu answers 0: there everything is
    read, which is why the monitor reads from the beginning on it."""
    from confluent_kafka import Producer

    settings = kafka_settings
    ensure_topics(settings)
    start = int(datetime.now(UTC).timestamp() * 1000) - DAY_MS
    stamps = [start - 2 * HOUR_MS, start - HOUR_MS, start + HOUR_MS, start + 2 * HOUR_MS]
    producer = Producer(producer_config(settings))
    logged, old_model = settings.topic_predictions, settings.topic_models
    for i, stamp in enumerate(stamps):
        producer.produce(logged, value=f"{i}".encode(), partition=0, timestamp=stamp)
    # keyed: Apache Kafka refuses a record without a key on a compacted topic (INVALID_RECORD)
    producer.produce(old_model, key=b"m", value=b"m", partition=0, timestamp=start - HOUR_MS)
    assert producer.flush(15) == 0
    partitions = [(logged, p) for p in range(settings.partitions)]
    answer = offsets_at(settings, partitions, start)

    with TopicReader(settings, [old_model, logged], start_at_ms={logged: start}) as reader:
        records = reader.read_to_end(15)
    read = sorted((r.partition, r.offset) for r in records if r.topic == logged)
    first = answer[(logged, 0)]
    assert read == [(0, o) for o in range(len(stamps)) if first is not None and o >= first]
    assert {(0, 2), (0, 3)} <= set(read)  # stamped at or after the start: always read
    assert [(r.topic, r.value) for r in records if r.topic == old_model] == [(old_model, b"m")]
    if kafka_broker.kind == "tansu":
        assert answer == {w: 0 for w in partitions}, answer
        assert read == [(0, o) for o in range(len(stamps))]
    else:  # Apache Kafka's time index answers exactly: the two records stamped before are skipped
        assert answer[(logged, 0)] == 2, answer
        assert read == [(0, 2), (0, 3)]


def _monitor_settings(kafka_settings: Settings) -> Settings:
    return kafka_settings.model_copy(
        update={
            "monitor_http_port": free_port(),
            "http_host": "127.0.0.1",
            "quality_min_outcomes": 10,
            "max_message_bytes": 2048,
        }
    )


def _send(settings: Settings, topic: str, values: list[bytes]) -> None:
    produce(settings, [(b"k", v) for v in values], topic=topic)


def test_monitor_online_quality_dead_letters_and_restart(kafka_settings, tmp_path):
    settings = _monitor_settings(kafka_settings)
    ensure_topics(settings)
    v1_artifact = publish_model(settings, version=1, seed=1)
    publish_model(settings, version=2, seed=2)
    forged = build_manifest(
        dump_artifact(small_artifact(2, seed=2)), small_artifact(2, seed=2).metadata, settings
    ).model_copy(update={"version": 3})  # v2's signature does not cover version 3
    produce_manifest(settings, forged)
    preds = (
        predictions(150, 1, seed=21, prefix="a")
        + predictions(150, 2, seed=22, prefix="b")
        + predictions(60, 3, seed=23, prefix="c")
    )
    labels = labels_for(preds, 24)
    called = [(p, y) for i, (p, y) in enumerate(zip(preds, labels, strict=True)) if i % 7 != 0]
    outcomes = [outcome(p, y, by_task=i % 3 == 0) for i, (p, y) in enumerate(called)]
    recalls = [outcome(p, not y, hours=72) for p, y in called[5:15]]
    early, later = outcomes[:20], outcomes[20:] + recalls
    unknown = [CallOutcome(event_id=f"ghost-{i}", **_rest()) for i in range(10)]
    bad = list(BAD_OUTCOMES.items())

    def values(items: list[CallOutcome]) -> list[bytes]:
        return [o.model_dump_json().encode() for o in items]

    # 1. outcomes before their predictions, outcomes of unknown events, and bad outcomes
    _send(settings, settings.topic_outcomes, values(early + unknown) + [raw for _, raw in bad])
    monitor = MonitorWorker(settings, tmp_path / "monitor.log")
    try:
        m = monitor.metric
        monitor.wait_until(
            lambda: (
                m("callscore_outcomes_consumed_total") == 30 + len(bad)
                and m("callscore_outcomes_waiting") == 30
            ),
            timeout=30,
            what="early outcomes waiting",
        )
        assert m("callscore_outcomes_unmatched_total") == 30
        for kind, _ in bad:
            assert m("callscore_outcomes_dead_lettered_total", f'reason="{kind}"') == 1
        # 2. the predictions resolve the early outcomes; the unknown ones keep waiting
        _send(settings, settings.topic_predictions, [p.model_dump_json().encode() for p in preds])
        monitor.wait_until(
            lambda: (
                m("callscore_online_predictions_consumed_total") == len(preds)
                and m("callscore_outcomes_waiting") == 10
            ),
            timeout=30,
            what="predictions",
        )
        assert m("callscore_outcomes_matched_total") == 20
        # 3. the remaining outcomes, re-calls included
        _send(settings, settings.topic_outcomes, values(later))
        total = len(early) + len(unknown) + len(bad) + len(later)
        labelled = {
            v: len({p.event_id for p, _ in _joined(preds, outcomes) if p.model_version == v})
            for v in (1, 2, 3)
        }
        _wait_quality(monitor, total, labelled)

        assert m("callscore_outcomes_matched_total") == len(outcomes) + len(recalls)
        assert m("callscore_outcomes_unmatched_total") == 30  # 20 early + 10 unknown
        assert m("callscore_outcomes_consumed_total") == (
            m("callscore_outcomes_dead_lettered_total")
            + m("callscore_outcomes_matched_total")
            + m("callscore_outcomes_waiting")
            + m("callscore_outcomes_expired_total")
        )
        expected = _assert_quality_equals_offline(monitor, preds, outcomes + recalls)
        baseline = v1_artifact.metadata.drift_baseline
        assert baseline is not None
        v1_scores = [p.score for p in preds if p.model_version == 1]
        assert m("callscore_online_score_psi", 'model_version="1"') == pytest.approx(
            psi(baseline.score, v1_scores), abs=1e-9
        )
        assert math.isnan(m("callscore_online_score_psi", 'model_version="3"'))  # forged
        assert m("callscore_online_manifests_total", 'reason="signature"') == 1

        letters = collect(
            settings, [settings.topic_outcome_dead_letters], lambda r: len(r) >= len(bad), 20
        )
        assert sorted(r.json()["error_kind"] for r in letters) == sorted(k for k, _ in bad)
        assert all(r.json()["source_topic"] == settings.topic_outcomes for r in letters)
        assert all(r.headers["error_kind"].decode() == r.json()["error_kind"] for r in letters)

        # 4. a restart rebuilds the same state from Kafka and does not repeat a dead letter; it
        # reads from the lookback (start_at_ms), which here is the beginning: every record is
        # newer, and the local broker answers every time lookup with 0 anyway
        assert monitor.stop() == 0
        monitor = MonitorWorker(settings, tmp_path / "monitor-2.log")
        _wait_quality(monitor, total, labelled)
        assert _assert_quality_equals_offline(monitor, preds, outcomes + recalls) == expected
        assert monitor.metric("callscore_outcomes_dead_lettered_total") == len(bad)
        assert len(read_topics(settings, [settings.topic_outcome_dead_letters])) == len(bad)
    finally:
        monitor.kill()
        monitor.stop()


def _joined(
    preds: list[PredictionRecord], outcomes: list[CallOutcome]
) -> list[tuple[PredictionRecord, CallOutcome]]:
    by_ref = {p.event_id: p for p in preds} | {p.task_id: p for p in preds}
    return [(by_ref[o.event_id or o.task_id or ""], o) for o in outcomes]


def _wait_quality(monitor: MonitorWorker, total: int, labelled: dict[int, int]) -> None:
    def ready() -> bool:
        m = monitor.metric
        return (
            m("callscore_online_caught_up") == 1
            and m("callscore_outcomes_consumed_total") == total
            and all(
                m("callscore_online_outcomes", f'model_version="{v}"') == n
                for v, n in labelled.items()
            )
        )

    monitor.wait_until(ready, timeout=30, what="every record handled")
    # an update counted after that began after the last record was handled (one loop thread)
    seen = monitor.metric("callscore_online_quality_updates_total")
    monitor.wait_until(
        lambda: monitor.metric("callscore_online_quality_updates_total") > seen,
        timeout=15,
        what="a quality update of the complete state",
    )


def _assert_quality_equals_offline(
    monitor: MonitorWorker, preds: list[PredictionRecord], outcomes: list[CallOutcome]
) -> dict[int, dict[str, Any]]:
    rows: dict[int, list[Labelled]] = defaultdict(list)
    for p, o in _joined(preds, outcomes):
        rows[p.model_version].append(Labelled(p, o))
    m = monitor.metric
    found = {}
    for version, labelled in rows.items():
        expected = offline(labelled)
        label = f'model_version="{version}"'
        assert m("callscore_online_outcomes", label) == expected["outcomes"]
        for name in ("roc_auc", "brier", "mean_score", "observed_rate"):
            assert m(f"callscore_online_{name}", label) == pytest.approx(expected[name], abs=1e-9)
        for t, rate in expected["tiers"].items():
            online = m("callscore_online_conversion_rate", f'{label},priority="{t}"')
            assert online == pytest.approx(rate, abs=1e-9, nan_ok=True)
        assert quality(labelled).roc_auc == pytest.approx(expected["roc_auc"], abs=1e-12)
        found[version] = expected
    return found
