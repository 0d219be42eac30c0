"""Consumer lag of the scorers', the call queue's and the monitor's groups (core/consumer_lag.py):
the arithmetic without a broker, then `LagReader` and `callscore monitor`'s
`callscore_consumer_lag` against the admin API and the expected numbers on Apache Kafka."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry

from core.consumer_lag import (
    MONITOR,
    QUEUE_WORKER,
    SCORER,
    ConsumerGroup,
    LagReader,
    PartitionLag,
    Watermarks,
    committed_offsets,
    deployment_groups,
    group_lag,
    partition_lag,
)
from core.errors import BrokerUnavailableError
from core.kafka import client_config, consumer_config, ensure_topics
from core.local_broker import LocalBroker, free_port
from core.settings import Settings
from core.topic_reader import partitions_of, read_topics
from monitor import worker as monitor_worker
from monitor.metrics import MonitorMetrics
from testkit.factories import valid_event
from testkit.harness import (
    MonitorWorker,
    event_bytes,
    produce,
    publish_model,
    worker_settings,
)
from testkit.harness import (
    committed_offsets as admin_committed,
)

Key = tuple[str, str, int]  # (group, topic, partition)
COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}

# --- the arithmetic, no broker ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("committed", "low", "high", "lag"),
    [
        (40, 0, 100, 60),  # high watermark - committed offset
        (100, 0, 100, 0),  # caught up
        (None, 0, 100, 100),  # nothing committed: every record kept is unread
        (None, 30, 100, 70),  # ... counted from the low watermark
        (10, 30, 100, 70),  # committed below the low watermark: those records are gone
        (None, 0, 0, 0),  # an empty partition
        (105, 0, 100, 0),  # a commit read after the watermark passed it: never negative
    ],
)
def test_partition_lag_counts_from_the_commit_or_the_low_watermark(committed, low, high, lag):
    assert partition_lag(committed, low, high) == lag


def test_group_lag_covers_the_groups_topics_only_in_order():
    group = ConsumerGroup(SCORER, "g", ("b", "a"))
    marks = {
        ("b", 1): Watermarks(0, 7),
        ("a", 0): Watermarks(2, 5),
        ("b", 0): Watermarks(0, 3),
        ("other", 0): Watermarks(0, 9),
    }
    lags = group_lag(group, marks, {("b", 1): 4, ("other", 0): 1})
    assert [(x.topic, x.partition, x.committed, x.lag) for x in lags] == [
        ("a", 0, None, 3),
        ("b", 0, None, 3),
        ("b", 1, 4, 3),
    ]
    assert {(x.consumer, x.group_id) for x in lags} == {(SCORER, "g")}


def test_the_deployments_groups_and_their_topics(settings):
    s = settings.model_copy(update={"streamer_app_id": "app"})
    assert [(g.consumer, g.group_id, g.topics) for g in deployment_groups(s)] == [
        (SCORER, "app", (s.topic_prospects, s.topic_outcomes, s.topic_do_not_call)),
        (QUEUE_WORKER, "app-queue", (s.topic_queue_inputs,)),
        (MONITOR, "app-monitor", (s.topic_models, s.topic_predictions, s.topic_outcomes)),
    ]


def test_the_scorers_group_topics_are_what_its_agents_consume(settings, tmp_path):
    from streamer.app import build_app

    s = settings.model_copy(update={"http_port": 1, "streamer_data_dir": tmp_path / "faust"})
    scorer = build_app(s)
    consumed = {topic for agent in scorer.app.agents.values() for topic in agent.channel.topics}
    (group,) = [g for g in deployment_groups(s) if g.consumer == SCORER]
    assert scorer.app.conf.id == group.group_id
    assert consumed == set(group.topics)


def test_committed_offsets_leave_out_partitions_without_a_commit():
    answer = [TopicPartition("t", 0, 12), TopicPartition("t", 1, -1001), TopicPartition("u", 0, 0)]
    assert committed_offsets(answer) == {("t", 0): 12, ("u", 0): 0}


def _samples(metrics: MonitorMetrics, name: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(sample.labels.values()): sample.value
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    }


def test_record_lag_replaces_the_series_and_counts_the_checks():
    metrics = MonitorMetrics(CollectorRegistry())
    lag = "callscore_consumer_lag"
    checks = "callscore_consumer_lag_checks_total"
    assert _samples(metrics, checks) == {("ok",): 0, ("failed",): 0}
    metrics.record_lag(
        [
            PartitionLag(SCORER, "g", "p", 0, 3, 0, 10),
            PartitionLag(SCORER, "g", "p", 1, None, 2, 6),
            PartitionLag(MONITOR, "g-monitor", "m", 0, 1, 0, 1),
        ]
    )
    assert _samples(metrics, lag) == {
        (SCORER, "g", "p", "0"): 7,
        (SCORER, "g", "p", "1"): 4,
        (MONITOR, "g-monitor", "m", "0"): 0,
    }
    metrics.record_lag([PartitionLag(SCORER, "g", "p", 0, 10, 0, 10)])  # the others are gone
    assert _samples(metrics, lag) == {(SCORER, "g", "p", "0"): 0}
    assert _samples(metrics, checks) == {("ok",): 2, ("failed",): 0}


def test_a_check_the_broker_does_not_answer_is_counted_and_the_gauges_kept(settings, monkeypatch):
    metrics = MonitorMetrics(CollectorRegistry())
    metrics.record_lag([PartitionLag(SCORER, "g", "p", 0, 3, 0, 10)])
    stop = threading.Event()

    class Unanswered:
        def __init__(self, _settings: Settings) -> None:
            pass

        def read(self, _groups: Any) -> list[PartitionLag]:
            stop.set()
            raise BrokerUnavailableError("Kafka at nowhere did not answer")

        def close(self) -> None:
            pass

    monkeypatch.setattr(monitor_worker, "LagReader", Unanswered)
    monitor_worker.watch_lag(settings, metrics, stop)
    assert _samples(metrics, "callscore_consumer_lag_checks_total") == {("ok",): 1, ("failed",): 1}
    assert _samples(metrics, "callscore_consumer_lag") == {(SCORER, "g", "p", "0"): 7}


# --- on Apache Kafka ------------------------------------------------------------------------


@pytest.fixture
def kafka_only(kafka_broker: LocalBroker) -> None:
    if kafka_broker.kind == "tansu":
        pytest.skip("Tansu reports the latest offset wrong (docs/local-broker.md): no lag there")


def _keyed(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"{prefix}-{i}".encode(), f"record {i}".encode()) for i in range(count)]


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    """Each partition's record count, read from the beginning (EOF, not watermarks); every
    partition of the topic, empty ones at 0."""
    counts = Counter(r.partition for r in read_topics(settings, [topic], timeout=30))
    return {p: counts[p] for _t, p in partitions_of(settings, [topic])}


def _commit(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """Commit offsets to a group as a consumer of it would (synchronously), again while the
    broker answers NOT_COORDINATOR (its offsets topic is still being made, in a fresh broker)."""
    consumer = Consumer(consumer_config(settings, group_id=group))
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
                return
            except KafkaException as exc:
                if exc.args[0].code() not in COORDINATOR_NOT_READY or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def _admin_lag(settings: Settings, group: ConsumerGroup) -> dict[Key, int]:
    """What the admin API says (committed offsets), with the watermarks a consumer gets from
    the broker (`get_watermark_offsets`, not `list_offsets`): high - committed, else high - low."""
    consumer = Consumer(client_config(settings) | {"group.id": "callscore-test-watermarks"})
    found = {}
    try:
        for topic in group.topics:
            committed = admin_committed(settings, group.group_id, topic)
            for _t, partition in partitions_of(settings, [topic]):
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                start = committed.get(partition, low)
                found[(group.group_id, topic, partition)] = high - start
    finally:
        consumer.close()
    return found


def test_lag_reader_equals_the_admin_api_and_the_records_left_for_every_group(
    kafka_settings, kafka_only, tmp_path
):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    groups = deployment_groups(settings)
    first_topic = {g.consumer: g.topics[0] for g in groups}  # prospects, queue inputs, models
    first_topic[MONITOR] = settings.topic_predictions
    for consumer, topic in first_topic.items():
        produce(settings, _keyed(consumer, 30), topic=topic)
    ends = {topic: _ends(settings, topic) for topic in first_topic.values()}
    assert all(n > 1 for counts in ends.values() for n in counts.values()), ends

    # each group: half of partition 0 committed, partition 1 nothing
    expected: dict[Key, int] = {}
    for group in groups:
        topic = first_topic[group.consumer]
        half = ends[topic][0] // 2
        _commit(settings, group.group_id, {(topic, 0): half})
        for t, p in partitions_of(settings, group.topics):
            records = ends.get(t, {}).get(p, 0)
            expected[(group.group_id, t, p)] = records - half if (t, p) == (topic, 0) else records

    reader = LagReader(settings)
    lags = reader.read(groups)
    found = {(x.group_id, x.topic, x.partition): x.lag for x in lags}
    assert found == expected
    admin = {k: v for g in groups for k, v in _admin_lag(settings, g).items()}
    assert found == admin
    assert {x.consumer for x in lags} == {SCORER, QUEUE_WORKER, MONITOR}
    no_commit = {(x.group_id, x.topic, x.partition) for x in lags if x.committed is None}
    assert (groups[0].group_id, settings.topic_prospects, 1) in no_commit

    # each group catches up: every partition committed at its end, no lag left
    for group in groups:
        topic = first_topic[group.consumer]
        _commit(settings, group.group_id, {(topic, p): n for p, n in ends[topic].items()})
    assert {x.lag for x in reader.read(groups)} == {0}
    assert set({k: v for g in groups for k, v in _admin_lag(settings, g).items()}.values()) == {0}


def _exported(monitor: MonitorWorker) -> dict[Key, float]:
    found = {}
    for line in monitor.http("GET", "/metrics").text.splitlines():
        if line.startswith("callscore_consumer_lag{"):
            labels = dict(
                pair.split("=", 1)
                for pair in line[line.index("{") + 1 : line.index("}")].split(",")
            )
            key = tuple(json.loads(labels[k]) for k in ("group", "topic", "partition"))
            found[(key[0], key[1], int(key[2]))] = float(line.rsplit(" ", 1)[1])
    return found


def _of(lags: dict[Key, Any], group: str) -> dict[Key, Any]:
    return {k: v for k, v in lags.items() if k[0] == group}


def test_the_monitor_exports_each_groups_lag_until_the_scorer_catches_up(
    kafka_settings, kafka_only, tmp_path, workers
):
    settings = worker_settings(kafka_settings, tmp_path, monitor_http_port=free_port())
    ensure_topics(settings)
    publish_model(settings, version=1)
    scorer_group, queue_group, monitor_group = deployment_groups(settings)
    events = [valid_event(event_id=f"e{i}", prospect_id=f"p{i}") for i in range(40)]
    produce(settings, [event_bytes(e) for e in events])
    produce(settings, _keyed("junk", 10), topic=settings.topic_queue_inputs)  # dead letters later
    prospects = _ends(settings, settings.topic_prospects)
    inputs = _ends(settings, settings.topic_queue_inputs)
    _commit(settings, scorer_group.group_id, {(settings.topic_prospects, 0): 3})
    _commit(settings, queue_group.group_id, {(settings.topic_queue_inputs, 0): 2})

    monitor = MonitorWorker(settings, tmp_path / "monitor.log")
    try:
        # 1. no scorer yet: the scorers' and the queue's lag is what the admin API says and what
        # was produced beyond the commits (partition 1: nothing committed, every record)
        expected = {
            (scorer_group.group_id, settings.topic_prospects, 0): prospects[0] - 3,
            (scorer_group.group_id, settings.topic_prospects, 1): prospects[1],
            (queue_group.group_id, settings.topic_queue_inputs, 0): inputs[0] - 2,
            (queue_group.group_id, settings.topic_queue_inputs, 1): inputs[1],
        } | {
            (scorer_group.group_id, topic, p): 0
            for topic in (settings.topic_outcomes, settings.topic_do_not_call)
            for p in range(settings.partitions)
        }

        def waiting() -> dict[Key, float]:
            found = _exported(monitor)
            return _of(found, scorer_group.group_id) | _of(found, queue_group.group_id)

        monitor.wait_until(lambda: waiting() == expected, 30, f"exported lag {expected}")
        for group in (scorer_group, queue_group):
            assert _admin_lag(settings, group) == _of(expected, group.group_id)
        # the monitor itself: every record handled and committed, so no lag
        _wait_caught_up(monitor, settings, monitor_group)

        # 2. the scorer (and its queue worker) read on from the commits: every lag goes to 0
        scorer = workers(settings)
        scorer.wait_ready()
        every = [scorer_group, queue_group, monitor_group]
        for group in every:
            _wait_caught_up(monitor, settings, group, timeout=90)
        assert _of(_exported(monitor), scorer_group.group_id) == _admin_lag(settings, scorer_group)
        # it read on from the commits: the 3 committed events of partition 0 were skipped
        assert scorer.metric("callscore_events_consumed_total") == len(events) - 3
        assert monitor.metric("callscore_consumer_lag_checks_total", 'result="failed"') == 0
    finally:
        monitor.kill()
        monitor.stop()


def _wait_caught_up(
    monitor: MonitorWorker, settings: Settings, group: ConsumerGroup, timeout: float = 30
) -> None:
    """Until the exported lag of every partition of the group is 0, and the admin API says the
    group committed each partition's end (a 0 that is not just a missing series)."""

    def caught_up() -> bool:
        exported = _of(_exported(monitor), group.group_id)
        partitions = partitions_of(settings, group.topics)
        if len(exported) != len(partitions) or set(exported.values()) != {0}:
            return False
        if set(_admin_lag(settings, group).values()) != {0}:
            return False
        for topic in group.topics:
            committed = admin_committed(settings, group.group_id, topic)
            ends = _ends(settings, topic)
            if any(committed.get(p) != n for p, n in ends.items() if n > 0):
                return False
        return True

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if caught_up():
            return
        time.sleep(0.5)
    raise AssertionError(
        f"{group.group_id}: exported {_of(_exported(monitor), group.group_id)}, "
        f"admin {_admin_lag(settings, group)}:\n{monitor.log()}"
    )
