"""The stream's batch path without a broker: streamer.batch.BatchScorer and its metrics."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from callscore.simulator.events import events_from_frame
from core.settings import Settings
from registry.artifact import dump_artifact
from registry.signing import build_manifest
from schemas import FEATURES, CallTask, DeadLetter, PredictionRecord, task_id_for
from streamer.batch import BatchAccountingError, BatchResult, BatchScorer
from streamer.dedupe import RecentIds
from streamer.faust_workarounds import abandon_batch, send_all
from streamer.metrics import StreamMetrics
from streamer.scoring import Incoming, ServedModel, feature_frame
from testkit.factories import small_artifact, valid_event
from testkit.harness import as_event
from trainer.synthetic import synthetic_bank_frame

NOW = datetime(2026, 11, 26, tzinfo=UTC)
MAX_BYTES = 2048


def _served(settings: Settings, version: int = 1, seed: int = 1) -> ServedModel:
    artifact = small_artifact(version, seed=seed)
    manifest = build_manifest(dump_artifact(artifact), artifact.metadata, settings)
    return ServedModel(artifact, manifest, 0, NOW)


def _settings(settings: Settings, **updates: Any) -> Settings:
    """The direct path (no call queue: tasks and prediction records straight from the batch);
    test_the_queued_path_writes_one_queue_input_per_scored_event covers the default."""
    return settings.model_copy(
        update={"max_message_bytes": MAX_BYTES, "queue_enabled": False, **updates}
    )


class Records:
    """Raw records with consecutive offsets and distinct Kafka timestamps."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.items: list[Incoming] = []

    def add(self, key: bytes | None, value: bytes | None, timestamp: float | None = None) -> int:
        offset = len(self.items)
        ts = 1_700_000_000.0 + offset if timestamp is None else timestamp
        self.items.append(Incoming(key, value, self.topic, offset % 2, offset, ts))
        return offset

    def event(self, event: dict, timestamp: float | None = None) -> int:
        return self.add(event["prospect_id"].encode(), json.dumps(event).encode(), timestamp)


INVALID = {
    "empty": b"",
    "not_json": b"{not json",
    "not_object": b"[1, 2]",
    "not_utf8": b"\xff\xfe{}",
    "invalid_fields": json.dumps(valid_event(event_id="bad-age", age=7)).encode(),
    "post_call_field": json.dumps(valid_event(event_id="bad-d", duration=3)).encode(),
    "too_large": b"x" * (MAX_BYTES + 100),
}


def _mixed_batch(topic: str) -> tuple[Records, list[dict], dict[int, str], list[int]]:
    """120 valid events, every kind of invalid record, two in-batch repeats, a None value.

    Returns the records, the valid events (in order), the offsets of the invalid records with
    their expected error kind, and the offsets of the repeats.
    """
    records = Records(topic)
    events = events_from_frame(synthetic_bank_frame(rows=120, seed=7), prefix="e")
    invalid: dict[int, str] = {}
    kinds = iter(INVALID.items())
    for i, event in enumerate(events):
        records.event(event)
        if i % 15 == 0 and (kind := next(kinds, None)):
            invalid[records.add(f"bad-{kind[0]}".encode(), kind[1])] = kind[0]
    repeats = [records.event(events[3])]  # an event id seen earlier in the same batch
    invalid[records.add(None, None)] = "empty"
    repeats.append(records.event({**events[40], "age": 99}))  # same id, other content
    return records, events, invalid, repeats


def test_mixed_batch_accounts_for_every_record_exactly_once(settings):
    settings = _settings(settings)
    scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))
    records, events, invalid, repeats = _mixed_batch(settings.topic_prospects)

    result = scorer.score(records.items, _served(settings), NOW)

    assert result.consumed == len(records.items) == len(events) + len(INVALID) + 1 + 2
    assert result.scored == len(events) and result.dead_lettered == len(INVALID) + 1
    assert result.duplicates == len(repeats) == 2
    assert result.consumed == result.scored + result.dead_lettered + result.duplicates
    # every record in exactly one place: a task (first occurrence of its event id), a dead
    # letter (by source offset) or a dropped repeat
    first_offset: dict[str, int] = {}
    for r in records.items:
        if r.offset not in invalid:
            first_offset.setdefault(json.loads(r.value or b"")["event_id"], r.offset)
    task_offsets = [first_offset[t.event_id] for t in result.tasks]
    letter_offsets = [d.source_offset for d in result.dead_letters]
    assert {d.source_offset: d.error_kind for d in result.dead_letters} == invalid
    placed = sorted(task_offsets + letter_offsets + repeats)
    assert placed == [r.offset for r in records.items]  # none twice, none missing
    assert [t.event_id for t in result.tasks] == [e["event_id"] for e in events]  # input order
    assert {t.priority for t in result.tasks} == {"high", "medium", "low"}


def test_outputs_go_to_their_topics_with_keys_headers_and_values(settings):
    settings = _settings(settings)
    scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))
    records, events, invalid, _ = _mixed_batch(settings.topic_prospects)

    result = scorer.score(records.items, _served(settings, version=3), NOW)

    assert len(result.outgoing) == 2 * result.scored + result.dead_lettered
    task_records = result.outgoing[: result.scored]
    letter_records = result.outgoing[2 * result.scored :]
    for event, task, record in zip(events, result.tasks, task_records, strict=True):
        assert record.topic == settings.task_topic(task.priority)
        assert record.topic == f"{settings.topic_tasks_prefix}.{task.priority}"
        assert record.key == event["prospect_id"].encode()
        assert record.headers == [
            ("model_version", b"3"),
            ("task_id", task_id_for(event["event_id"]).encode()),
        ]
        assert CallTask.model_validate_json(record.value) == task
        assert task.task_id == task_id_for(event["event_id"]) and task.model_version == 3
        assert task.scored_at == NOW
    source = {r.offset: r for r in records.items}
    for letter, record in zip(result.dead_letters, letter_records, strict=True):
        assert record.topic == settings.topic_dead_letters
        assert record.key == source[letter.source_offset].key
        assert record.headers == [("error_kind", letter.error_kind.encode())]
        assert DeadLetter.model_validate_json(record.value) == letter
        assert letter.source_topic == settings.topic_prospects
        assert letter.source_partition == source[letter.source_offset].partition
    big = next(d for d in result.dead_letters if d.error_kind == "too_large")
    assert big.payload_truncated and len(big.payload) == MAX_BYTES
    assert big.payload_size == MAX_BYTES + 100
    age = next(d for d in result.dead_letters if d.error_kind == "invalid_fields")
    assert [fe.field for fe in age.field_errors] == ["age"]
    assert sorted(invalid.values()) == sorted(d.error_kind for d in result.dead_letters)


def test_every_task_has_exactly_one_prediction_record_with_its_event_and_score(settings):
    settings = _settings(settings)
    scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))
    records, events, _, _ = _mixed_batch(settings.topic_prospects)

    result = scorer.score(records.items, _served(settings, version=4), NOW)

    logged = [r for r in result.outgoing if r.topic == settings.topic_predictions]
    assert result.outgoing[result.scored : 2 * result.scored] == logged
    assert len(logged) == result.scored == len(events)
    predictions = [PredictionRecord.model_validate_json(r.value) for r in logged]
    assert [p.event_id for p in predictions] == [t.event_id for t in result.tasks]
    for event, task, record, logged_as in zip(
        events, result.tasks, logged, predictions, strict=True
    ):
        assert record.key == event["event_id"].encode()
        assert record.headers == [("model_version", b"4"), ("task_id", task.task_id.encode())]
        assert logged_as.features == {name: event[name] for name in FEATURES}
        assert logged_as.occurred_at == datetime.fromisoformat(event["occurred_at"])
        assert (logged_as.task_id, logged_as.prospect_id) == (task.task_id, task.prospect_id)
        assert logged_as.score == task.score  # the same float, not a re-computation
        assert (logged_as.priority, logged_as.percentile) == (task.priority, task.percentile)
        assert (logged_as.model_version, logged_as.scored_at) == (4, NOW)


def test_outputs_are_the_bytes_of_model_dump_json(settings):
    """The serializer-direct bytes are exactly what model_dump_json gave, records included."""
    settings = _settings(settings)
    records, events, _, _ = _mixed_batch(settings.topic_prospects)
    result = BatchScorer(settings, RecentIds(1000)).score(records.items, _served(settings), NOW)
    by_id = {e["event_id"]: as_event(e) for e in events}
    for task, task_record, prediction in zip(
        result.tasks,
        result.outgoing[: result.scored],
        result.outgoing[result.scored : 2 * result.scored],
        strict=True,
    ):
        event = by_id[task.event_id]
        assert task_record.value == task.model_dump_json().encode()
        expected = PredictionRecord(
            event_id=event.event_id,
            task_id=task.task_id,
            prospect_id=event.prospect_id,
            occurred_at=event.occurred_at,
            features=event.features(),
            score=task.score,
            priority=task.priority,
            percentile=task.percentile,
            model_version=task.model_version,
            scored_at=task.scored_at,
        )
        assert prediction.value == expected.model_dump_json().encode()


def test_scores_equal_offline_predict(settings):
    settings = _settings(settings)
    served = _served(settings, seed=2)
    records, events, _, _ = _mixed_batch(settings.topic_prospects)

    result = BatchScorer(settings, RecentIds(1000)).score(records.items, served, NOW)

    offline = served.artifact.predict(feature_frame([as_event(e) for e in events]))
    priorities = served.artifact.priorities(offline)
    percentiles = served.artifact.percentiles(offline)
    assert len(result.tasks) == len(events)
    for task, score, priority, percentile in zip(
        result.tasks, offline, priorities, percentiles, strict=True
    ):
        assert task.score == pytest.approx(float(score), rel=1e-12)
        assert task.priority == priority and task.percentile == float(percentile)
    assert result.scoring_seconds > 0


def test_duplicates_across_batches_and_the_empty_batch(settings):
    settings = _settings(settings)
    served = _served(settings)
    scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))
    first, second = Records(settings.topic_prospects), Records(settings.topic_prospects)
    for i in range(3):
        first.event(valid_event(event_id=f"a-{i}", prospect_id=f"p-{i}"))
    second.event(valid_event(event_id="a-1", prospect_id="p-1"))  # seen in the first batch
    second.event(valid_event(event_id="b-0", prospect_id="p-9"))
    second.add(b"k", b"{broken")

    one = scorer.score(first.items, served, NOW)
    empty = scorer.score([], served, NOW)
    two = scorer.score(second.items, served, NOW)

    assert (one.consumed, one.scored, one.dead_lettered, one.duplicates) == (3, 3, 0, 0)
    assert (empty.consumed, empty.scored, empty.dead_lettered, empty.duplicates) == (0, 0, 0, 0)
    assert empty.outgoing == [] and empty.task_timestamps == []
    assert (two.consumed, two.scored, two.dead_lettered, two.duplicates) == (3, 1, 1, 1)
    assert [t.event_id for t in two.tasks] == ["b-0"]
    assert [r.key for r in two.outgoing] == [b"p-9", b"b-0", b"k"]  # task, prediction, letter


def test_dedupe_window_off_scores_repeats_again(settings):
    settings = _settings(settings, dedupe_window=0)
    scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))
    records = Records(settings.topic_prospects)
    records.event(valid_event(event_id="same"))
    records.event(valid_event(event_id="same"))

    result = scorer.score(records.items, _served(settings), NOW)

    assert (result.scored, result.duplicates) == (2, 0)
    assert result.tasks[0].task_id == result.tasks[1].task_id == task_id_for("same")


def test_task_timestamps_follow_the_scored_records(settings):
    settings = _settings(settings)
    scorer = BatchScorer(settings, RecentIds(100))
    records = Records(settings.topic_prospects)
    records.event(valid_event(event_id="t-0"), timestamp=100.0)
    records.add(b"k", b"")
    records.event(valid_event(event_id="t-0"), timestamp=200.0)  # duplicate: not measured
    records.event(valid_event(event_id="t-1"), timestamp=300.0)
    records.items.append(
        Incoming(b"k", json.dumps(valid_event(event_id="t-2")).encode(), "p", 0, 9, None)
    )

    result = scorer.score(records.items, _served(settings), NOW)

    assert [t.event_id for t in result.tasks] == ["t-0", "t-1", "t-2"]
    assert result.task_timestamps == [100.0, 300.0, None]


def test_batch_result_refuses_to_lose_or_invent_events(settings):
    settings = _settings(settings)
    records = Records(settings.topic_prospects)
    records.event(valid_event(event_id="x"))
    records.add(b"k", b"nope")
    good = BatchScorer(settings, RecentIds(10)).score(records.items, _served(settings), NOW)
    fields = {
        "consumed": good.consumed,
        "tasks": good.tasks,
        "dead_letters": good.dead_letters,
        "duplicates": good.duplicates,
        "outgoing": good.outgoing,
        "task_timestamps": good.task_timestamps,
        "scoring_seconds": 0.0,
    }
    assert BatchResult(**fields).consumed == 2
    with pytest.raises(BatchAccountingError, match="consumed 3 != scored 1"):
        BatchResult(**{**fields, "consumed": 3})
    with pytest.raises(BatchAccountingError, match="consumed 2 != scored 1"):
        BatchResult(**{**fields, "duplicates": 1})
    with pytest.raises(BatchAccountingError, match="2 outgoing records for 1 tasks"):
        BatchResult(**{**fields, "outgoing": good.outgoing[:2]})  # a prediction record missing
    with pytest.raises(BatchAccountingError, match="0 timestamps for 1 tasks"):
        BatchResult(**{**fields, "task_timestamps": []})


def test_metrics_follow_the_accounting(settings):
    settings = _settings(settings)
    metrics = StreamMetrics()
    scorer = BatchScorer(settings, RecentIds(settings.dedupe_window))
    records, events, invalid, repeats = _mixed_batch(settings.topic_prospects)
    result = scorer.score(records.items, _served(settings), NOW)
    value = metrics.registry.get_sample_value

    metrics.record_scored(result)
    assert value("callscore_events_consumed_total") == len(records.items)
    assert value("callscore_events_scored_total") == 0  # not acknowledged by the broker yet
    assert value("callscore_batch_size_count") == 1
    assert value("callscore_batch_size_sum") == len(records.items)
    assert value("callscore_scoring_duration_seconds_count") == 1

    acked_at = 1_700_000_000.0 + len(records.items) + 0.5
    metrics.record_published(result, acked_at)
    assert value("callscore_events_scored_total") == len(events)
    assert value("callscore_duplicates_dropped_total") == len(repeats)
    dead = {
        kind: value("callscore_events_dead_lettered_total", {"reason": kind}) for kind in INVALID
    }
    assert dead == {kind: 2 if kind == "empty" else 1 for kind in INVALID}
    assert sum(dead.values()) == len(invalid)
    tiers = {
        p: value("callscore_tasks_produced_total", {"priority": p})
        for p in ("high", "medium", "low")
    }
    assert tiers == {p: sum(t.priority == p for t in result.tasks) for p in tiers}
    consumed = value("callscore_events_consumed_total")
    assert consumed == value("callscore_events_scored_total") + sum(dead.values()) + value(
        "callscore_duplicates_dropped_total"
    )
    assert value("callscore_end_to_end_latency_seconds_count") == len(events)
    expected = sum(acked_at - ts for ts in result.task_timestamps if ts)
    assert value("callscore_end_to_end_latency_seconds_sum") == pytest.approx(expected)


class _FakeApp:
    """Just what faust_workarounds touches: `producer.send` and `crash`."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.futures: list[asyncio.Future] = []
        self.crashed: list[BaseException] = []
        self.producer = SimpleNamespace(send=self._send)

    async def _send(self, *args: Any) -> asyncio.Future:
        self.sent.append(args)
        future = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    async def crash(self, exc: BaseException) -> None:
        self.crashed.append(exc)


def test_send_all_returns_only_when_every_record_is_acknowledged(settings):
    settings = _settings(settings)
    records = Records(settings.topic_prospects)
    records.event(valid_event(event_id="s-0"))
    records.add(b"k", b"")
    result = BatchScorer(settings, RecentIds(10)).score(records.items, _served(settings), NOW)
    app = _FakeApp()

    async def run() -> bool:
        sending = asyncio.ensure_future(send_all(app, result.outgoing))
        await asyncio.sleep(0)
        for future in app.futures[:-1]:
            future.set_result(None)
        await asyncio.sleep(0)
        waited = not sending.done()  # one acknowledgement still missing
        app.futures[-1].set_result(None)
        await sending
        return waited

    assert asyncio.run(run())
    assert app.sent == [(r.topic, r.key, r.value, None, None, r.headers) for r in result.outgoing]


@pytest.mark.parametrize(
    ("exc", "crashes"),
    [(ValueError("boom"), True), (asyncio.CancelledError(), False), (GeneratorExit(), False)],
)
def test_abandon_batch_keeps_events_uncommittable(exc, crashes):
    events = [SimpleNamespace(message=SimpleNamespace(acked=False)) for _ in range(3)]
    app = _FakeApp()
    asyncio.run(abandon_batch(app, events, exc))
    assert [e.message.acked for e in events] == [True, True, True]
    assert app.crashed == ([exc] if crashes else [])


def test_the_queued_path_writes_one_queue_input_per_scored_event(settings):
    """With the call queue, a scored event's only output is its prediction-log line, as an
    input of its prospect's queue partition; dead letters are as before."""
    from callqueue.inputs import decode_input, partition_for

    settings = _settings(settings, queue_enabled=True)
    records, valid, invalid, _repeats = _mixed_batch(settings.topic_prospects)
    result = BatchScorer(settings, RecentIds(1000)).score(records.items, _served(settings), NOW)
    inputs = [o for o in result.outgoing if o.topic == settings.topic_queue_inputs]
    assert len(inputs) == result.scored == len(valid)
    assert len(result.outgoing) == result.scored + result.dead_lettered == len(valid) + len(invalid)
    for record, event, task in zip(inputs, valid, result.tasks, strict=True):
        assert record.partition == partition_for(event["prospect_id"], settings.partitions)
        item = decode_input(record.key, record.value, dict(record.headers)["kind"], 0, 0)
        assert item.kind == "scored" and item.prediction is not None
        assert item.prediction.event_id == event["event_id"] == task.event_id
        assert item.prediction.score == task.score and item.prediction.task_id == task.task_id
    assert result.records_per_task == 1
