"""Broker outage: the (only) Apache Kafka node is SIGKILLed mid-stream and started again 20 s
later on the same ports and log folder, so it comes back with its data, as a crashed broker does.
Every client (the worker's Faust consumer and producer, its model reader and broker check, this
test's producer) loses its connections at once. The worker must say it is not ready during the
outage, log a bounded number of lines, and score every event afterwards without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.kafka import ensure_topics, producer_config
from core.local_broker import KafkaCluster, start_kafka
from testkit.factories import valid_event
from testkit.harness import collect, event_bytes, isolated_settings, publish_model, worker_settings

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 20.0
EVENTS = 1500
EVENTS_PER_SECOND = 50
MAX_LOG_LINES_DURING_OUTAGE = 100


@pytest.fixture
def own_kafka(tmp_path) -> Iterator[KafkaCluster]:
    """An Apache Kafka node of this test's own, to kill and restart."""
    cluster = start_kafka(folder=tmp_path / "kafka")
    try:
        yield cluster
    finally:
        cluster.stop()


def line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def test_twenty_second_broker_outage_loses_nothing_and_needs_no_restart(
    own_kafka, unique, tmp_path, workers
):
    from confluent_kafka import Producer

    base = isolated_settings(unique, tmp_path, partitions=2, **own_kafka.client_settings())
    settings = worker_settings(
        base, tmp_path, batch_max_size=20, broker_retry_seconds=60.0, broker_check_seconds=0.5
    )
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings, "outage")
    worker.wait_ready(60)
    pid = worker.process.pid
    assert worker.metric("callscore_broker_reachable") == 1

    # Each event newer than its prospect's last one: every event opens a task.
    start = datetime(2026, 11, 26, tzinfo=UTC)
    events = [
        valid_event(
            event_id=f"o-{i}",
            prospect_id=f"p-{i % 89}",
            occurred_at=(start + timedelta(seconds=i)).isoformat(),
        )
        for i in range(EVENTS)
    ]
    # The producer buffers what it cannot deliver during the outage and sends it afterwards.
    producer = Producer(
        producer_config(settings, **{"message.timeout.ms": 120_000, "log_level": 0})
    )

    def produce_steadily() -> None:
        for start in range(0, EVENTS, EVENTS_PER_SECOND // 10):
            for event in events[start : start + EVENTS_PER_SECOND // 10]:
                key, value = event_bytes(event)
                producer.produce(settings.topic_prospects, key=key, value=value)
            producer.poll(0)
            time.sleep(0.1)

    feeder = threading.Thread(target=produce_steadily, daemon=True)
    feeder.start()
    worker.wait_until(
        lambda: worker.metric("callscore_events_scored_total") >= 100, 30, "scoring before the cut"
    )

    timeline: dict[str, float] = {}
    t0 = time.monotonic()
    lines_before = line_count(worker.log_path)
    own_kafka.kill(1)
    statuses: list[tuple[float, int]] = []
    while (elapsed := time.monotonic() - t0) < OUTAGE_SECONDS:
        status = worker.http("GET", "/readyz").status
        statuses.append((elapsed, status))
        if status == 503 and "readyz_503" not in timeline:
            timeline["readyz_503"] = elapsed
            assert worker.metric("callscore_broker_reachable") == 0
        time.sleep(0.25)
    lines_during = line_count(worker.log_path) - lines_before
    scored_at_restore = worker.metric("callscore_events_scored_total")
    own_kafka.start_node(1)
    timeline["restored"] = time.monotonic() - t0

    worker.wait_until(
        lambda: worker.metric("callscore_events_scored_total") > scored_at_restore,
        60,
        "scoring resumed",
    )
    timeline["scoring_resumed"] = time.monotonic() - t0
    worker.wait_ready(60)
    timeline["readyz_200"] = time.monotonic() - t0
    feeder.join(60)
    assert producer.flush(60) == 0, "events not acknowledged by the broker"

    wanted = {e["event_id"] for e in events}
    tasks = collect(
        settings,
        settings.task_topics.values(),
        lambda r: {t.json()["event_id"] for t in r} >= wanted,
        timeout=60,
    )
    timeline["all_scored"] = time.monotonic() - t0
    print(f"\n[outage] timeline (s after the cut): {timeline}; log lines during it: {lines_during}")

    assert worker.process.poll() is None and worker.process.pid == pid, worker.log()
    assert {t.json()["event_id"] for t in tasks} >= wanted  # every event scored, once or more
    by_event: dict[str, set[str]] = {}
    for task in tasks:
        by_event.setdefault(task.json()["event_id"], set()).add(task.json()["task_id"])
    assert all(len(ids) == 1 for ids in by_event.values())  # repeats keep their task id
    assert "readyz_503" in timeline, f"/readyz never went 503 during the outage: {statuses}"
    assert timeline["readyz_503"] < 5.0, statuses  # detected within a few seconds
    assert all(status == 503 for elapsed, status in statuses if elapsed > 5.0), statuses
    assert worker.metric("callscore_broker_reachable") == 1
    assert lines_during < MAX_LOG_LINES_DURING_OUTAGE, worker.log()
