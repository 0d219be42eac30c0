"""Crash safety: SIGKILL a worker mid-stream; its successor leaves no event without an output."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from core.kafka import ensure_topics
from testkit.factories import valid_event
from testkit.harness import collect, event_bytes, produce, publish_model, worker_settings

pytestmark = pytest.mark.slow


def test_sigkill_mid_stream_then_restart_loses_nothing(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path, batch_max_size=50)
    ensure_topics(settings)
    publish_model(settings, version=1)
    # 97 prospects, each event newer than its prospect's last one: every event opens a task
    # (superseding the prospect's open one), so each must reach a tier topic at least once.
    start = datetime(2026, 11, 26, tzinfo=UTC)
    valid = [
        valid_event(
            event_id=f"k-{i}",
            prospect_id=f"p-{i % 97}",
            occurred_at=(start + timedelta(seconds=i)).isoformat(),
        )
        for i in range(2000)
    ]
    invalid = [(f"p-{i}".encode(), b"{broken") for i in range(50)]
    records = [event_bytes(e) for e in valid] + invalid
    records = [r for pair in zip(records[::2], records[1::2], strict=False) for r in pair]

    first = workers(settings, "first")
    first.wait_ready()
    stop_producing = threading.Event()

    def produce_steadily() -> None:  # about 1,000 events/s
        for start in range(0, len(records), 50):
            produce(settings, records[start : start + 50])
            time.sleep(0.05)
        stop_producing.set()

    producer = threading.Thread(target=produce_steadily)
    producer.start()
    first.wait_until(
        lambda: first.metric("callscore_events_consumed_total") >= 200, 30, "consumption"
    )
    first.kill()  # SIGKILL mid-stream: no graceful commit, outputs possibly half-written
    assert first.process.returncode == -9
    producer.join(60)
    assert stop_producing.is_set()

    second = workers(
        settings.model_copy(update={"http_port": first.settings.http_port + 0}), "second"
    )
    second.wait_ready(90)
    wanted = {e["event_id"] for e in valid}

    tasks = collect(
        settings,
        settings.task_topics.values(),
        lambda r: {t.json()["event_id"] for t in r} >= wanted,
        timeout=90,
    )
    letters = collect(
        settings, [settings.topic_dead_letters], lambda r: len(r) >= len(invalid), timeout=30
    )
    print(f"\n{len(tasks)} tasks for {len(wanted)} events (replayed: {len(tasks) - len(wanted)})")
    assert {t.json()["event_id"] for t in tasks} == wanted  # at least once, nothing lost
    assert len({(d.json()["source_partition"], d.json()["source_offset"]) for d in letters}) == len(
        invalid
    )
    # duplicates (replayed after the kill) keep their task id, so dialers can drop them
    assert len({t.json()["task_id"] for t in tasks}) == len(wanted)
