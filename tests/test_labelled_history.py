"""The labelled history at the lake's edge (real broker): the lake's complete days plus the
topics' tail, each record once, wherever it is read from; and the scheduler deciding the same
over the lake, the topics or both.

Records are produced with explicit Kafka timestamps so that days are days: the local broker
has no time index (it answers every offsets_for_times with 0), so there the tail is read
whole and the identity check does the cutting; on Apache Kafka the same tests run with the
time index cutting too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from core.kafka import ensure_topics
from core.settings import Settings
from core.topic_reader import Span
from lake.days import day_window
from lake.export import export_day
from lake.reader import complete_days
from schemas import CallOutcome, PredictionRecord
from testkit.factories import small_artifact
from tests.test_schedule import calls_at, publish
from trainer.history import LabelHistory, read_labels, tail_spans
from trainer.schedule import Scheduler, TrainAttempt, observe

HOUR_MS = 3_600_000
P0, P1 = ("t", 0), ("t", 1)


def test_tail_spans_skip_the_covered_days_by_offset():
    # No complete day: both partitions whole.
    assert tail_spans([P0], None, None) == [{P0: Span(OFFSET_BEGINNING)}]
    before = {P0: 5, P1: None}  # P1: nothing stamped in or after the covered days
    after = {P0: 9, P1: None}  # P1: nothing stamped that late
    assert tail_spans([P0, P1], before, after) == [
        {P0: Span(OFFSET_BEGINNING, 5), P1: Span(OFFSET_BEGINNING)},
        {P0: Span(9), P1: Span(OFFSET_END)},
    ]
    # A broker without a time index: nothing before, everything after (the identity cuts).
    assert tail_spans([P0], {P0: 0}, {P0: 0}) == [{}, {P0: Span(0)}]


def produce_stamped(
    settings: Settings, records: list[tuple[PredictionRecord | CallOutcome, int]]
) -> None:
    """Each record to its topic (predictions keyed by event, as the scorer writes them) with
    an explicit Kafka timestamp in ms."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for record, stamp in records:
        prediction = isinstance(record, PredictionRecord)
        producer.produce(
            settings.topic_predictions if prediction else settings.topic_outcomes,
            key=record.event_id.encode() if prediction and record.event_id else None,
            value=record.model_dump_json().encode(),
            timestamp=stamp,
        )
    assert producer.flush(30) == 0


def stamped(
    settings: Settings, prefix: str, n: int, at_ms: int
) -> list[tuple[PredictionRecord | CallOutcome, int]]:
    """n labelled calls, their prediction and outcome stamped at at_ms (+1 ms each)."""
    predictions, outcomes = calls_at(
        settings, n, datetime(2010, 1, 1, tzinfo=UTC), timedelta(hours=1), seed=len(prefix)
    )
    renamed = [
        (p.model_copy(update={"event_id": f"{prefix}-{i}"}), o)
        for i, (p, o) in enumerate(zip(predictions, outcomes, strict=True))
    ]
    out: list[tuple[PredictionRecord | CallOutcome, int]] = []
    for i, (p, o) in enumerate(renamed):
        out += [(p, at_ms + i), (o.model_copy(update={"event_id": p.event_id}), at_ms + i + 1)]
    return out


@pytest.fixture
def day_before_yesterday() -> date:
    # Complete whatever the time of day, with a lateness of up to 24 hours.
    return datetime.now(UTC).date() - timedelta(days=2)


def test_lake_plus_tail_across_a_day_boundary_loses_no_label_and_counts_none_twice(
    kafka_settings, day_before_yesterday
):
    settings = kafka_settings.model_copy(update={"export_max_lateness_seconds": 2 * 3600})
    ensure_topics(settings)
    start, end = day_window(day_before_yesterday, UTC)  # export_timezone is UTC
    exported = stamped(settings, "in-day", 20, start + 6 * HOUR_MS)
    produce_stamped(settings, exported)
    result = export_day(settings, day_before_yesterday)
    assert {t.table: t.rows for t in result.tables}["outcomes"] == 20
    # After the export: a late record of the day (within the lateness), then the next day's.
    late = stamped(settings, "late", 5, end - HOUR_MS)
    next_day = stamped(settings, "next-day", 7, end + 3 * HOUR_MS)
    produce_stamped(settings, late + next_day)
    assert complete_days(settings.export_url, ["predictions", "outcomes"]) == [day_before_yesterday]

    history = read_labels(settings)
    events = sorted(item.prediction.event_id for item in history.labelled)
    expected = sorted(
        r.event_id for r, _ in exported + late + next_day if isinstance(r, PredictionRecord)
    )
    assert events == expected  # 32: no label lost, none twice
    assert (history.counts.predictions, history.counts.outcomes) == (32, 32)

    # A day exported while it is still going on is marked incomplete: its later records are
    # read from the topics, never taken as in the lake.
    export_day(settings, datetime.now(UTC).date())
    assert complete_days(settings.export_url, ["predictions", "outcomes"]) == [day_before_yesterday]
    assert len(read_labels(settings).labelled) == 32


def test_schedulers_decide_the_same_over_the_topics_the_lake_or_both(
    kafka_settings, day_before_yesterday
):
    settings = kafka_settings.model_copy(
        update={"retrain_interval_seconds": 10**9, "retrain_min_new_outcomes": 30}
    )
    ensure_topics(settings)
    publish(settings, small_artifact(1), labelled_until=datetime(2009, 12, 1, tzinfo=UTC))
    start, _end = day_window(day_before_yesterday, UTC)
    produce_stamped(settings, stamped(settings, "history", 40, start + HOUR_MS))

    def scheduler(s: Settings) -> Scheduler:
        def train(_reason: str, _labels: object) -> TrainAttempt:
            raise AssertionError("only checks here")

        return Scheduler(s, lambda: observe(s), train, lambda _labels: None)

    topics_only = scheduler(settings).check()[0]
    assert topics_only.action == "retrain" and topics_only.signals.new_outcomes == 40
    export_day(settings, day_before_yesterday)
    both = scheduler(settings).check()[0]  # restarted: the lake and the same records on topics
    # The lake alone: fresh topics (retention deleted everything), the same model topic.
    lake_only_settings = settings.model_copy(
        update={
            "topic_predictions": f"{settings.topic_predictions}-expired",
            "topic_outcomes": f"{settings.topic_outcomes}-expired",
        }
    )
    ensure_topics(lake_only_settings)
    lake_only = scheduler(lake_only_settings).check()[0]
    assert both.same_decision() == topics_only.same_decision() == lake_only.same_decision()
    # ... and the same labels to train on.
    key = sorted((i.prediction.event_id, i.subscribed) for i in read_labels(settings).labelled)
    assert key == sorted(
        (i.prediction.event_id, i.subscribed) for i in read_labels(lake_only_settings).labelled
    )


def test_a_history_kept_between_reads_equals_one_read_afresh(kafka_settings, day_before_yesterday):
    """The scheduler's state between checks: each read adds what is new (new tail records, a
    newly exported day) and ends where a restarted scheduler's first read would."""
    ensure_topics(kafka_settings)
    start, end = day_window(day_before_yesterday, UTC)
    kept = LabelHistory(kafka_settings)

    def same_as_afresh() -> int:
        now, afresh = kept.read(), LabelHistory(kafka_settings).read()
        columns = ["event_key", "called_at", "subscribed", "score"]
        pd.testing.assert_frame_equal(now.labelled[columns], afresh.labelled[columns])
        assert now.counts == afresh.counts
        return len(now.labelled)

    produce_stamped(kafka_settings, stamped(kafka_settings, "first", 10, start + HOUR_MS))
    assert same_as_afresh() == 10
    produce_stamped(kafka_settings, stamped(kafka_settings, "second", 5, start + 2 * HOUR_MS))
    assert same_as_afresh() == 15
    export_day(kafka_settings, day_before_yesterday)  # the lake now has those 15 too
    produce_stamped(kafka_settings, stamped(kafka_settings, "third", 4, end + HOUR_MS))
    assert same_as_afresh() == 19
