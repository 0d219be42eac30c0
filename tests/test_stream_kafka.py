"""The scorer against a real broker: tasks per tier, dead letters, HTTP API, readiness.

The worker runs as a subprocess (`callscore stream`), exactly as in production.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from core.kafka import ensure_topics
from schemas import FEATURES, task_id_for
from streamer.scoring import feature_frame
from testkit.factories import valid_event
from testkit.harness import as_event, collect, event_bytes, produce, publish_model, worker_settings


def invalid_records(big: int) -> list[tuple[bytes | None, bytes | None, str]]:
    return [
        (b"k-empty", b"", "empty"),
        (b"k-json", b"{not json", "not_json"),
        (b"k-list", b"[1, 2]", "not_object"),
        (b"k-utf8", b"\xff\xfe{}", "not_utf8"),
        (b"k-age", json.dumps(valid_event(event_id="bad-age", age=7)).encode(), "invalid_fields"),
        (
            b"k-dur",
            json.dumps(valid_event(event_id="bad-d", duration=3)).encode(),
            "post_call_field",
        ),
        (b"k-big", b"x" * big, "too_large"),
    ]


def test_tasks_dead_letters_http_and_metrics(kafka_settings, tmp_path, workers):
    from callscore.simulator.events import events_from_frame
    from trainer.synthetic import synthetic_bank_frame

    settings = worker_settings(kafka_settings, tmp_path, max_message_bytes=2048)
    ensure_topics(settings)
    artifact = publish_model(settings, version=1)
    events = events_from_frame(synthetic_bank_frame(rows=120, seed=7), prefix="e")
    bad = invalid_records(big=settings.max_message_bytes + 100)
    duplicate = events[3]
    produce(settings, [event_bytes(e) for e in events])
    produce(settings, [(k, v) for k, v, _ in bad])
    produce(settings, [event_bytes(duplicate)])

    worker = workers(settings)
    worker.wait_ready()
    tier_topics = list(settings.task_topics.values())
    tasks = collect(settings, tier_topics, lambda r: len(r) >= len(events), timeout=60, settle=1.0)
    letters = collect(
        settings, [settings.topic_dead_letters], lambda r: len(r) >= len(bad), timeout=30
    )

    # exactly one task per valid event, in the topic of its tier, scored like offline
    assert len(tasks) == len(events)
    by_event = {t.json()["event_id"]: t for t in tasks}
    assert set(by_event) == {e["event_id"] for e in events}
    offline = artifact.predict(feature_frame([as_event(e) for e in events]))
    for event, expected in zip(events, offline, strict=True):
        task = by_event[event["event_id"]]
        assert task.json()["score"] == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
        assert task.topic == settings.task_topic(task.json()["priority"])
        assert task.key == event["prospect_id"].encode()
        assert task.json()["task_id"] == task_id_for(event["event_id"])
        assert task.headers["model_version"] == b"1"
        assert task.headers["task_id"] == task.json()["task_id"].encode()
    assert {t.json()["priority"] for t in tasks} == {"high", "medium", "low"}

    # exactly one dead letter per invalid message, with the reason and the original bytes
    assert sorted(d.json()["error_kind"] for d in letters) == sorted(r for *_, r in bad)
    for letter in letters:
        assert letter.json()["source_topic"] == settings.topic_prospects
    age = next(d.json() for d in letters if d.json()["error_kind"] == "invalid_fields")
    assert [fe["field"] for fe in age["field_errors"]] == ["age"]
    big = next(d.json() for d in letters if d.json()["error_kind"] == "too_large")
    assert big["payload_truncated"] is True and big["payload_size"] == len(bad[-1][1])

    # accounting: consumed = scored + dead-lettered + duplicates dropped
    worker.wait_until(
        lambda: worker.metric("callscore_events_consumed_total") == len(events) + len(bad) + 1,
        timeout=10,
        what="metrics",
    )
    assert worker.metric("callscore_events_scored_total") == len(events)
    assert worker.metric("callscore_events_dead_lettered_total") == len(bad)
    assert worker.metric("callscore_events_dead_lettered_total", 'reason="too_large"') == 1
    assert worker.metric("callscore_duplicates_dropped_total") == 1
    assert worker.metric("callscore_model_version") == 1

    # The scorer serves only its service routes: the dialer-facing ones are `callscore api`'s
    # (tests/test_api_process.py), and Faust's own pages are not mounted (streamer/web.py).
    for method, path in (("POST", "/score"), ("GET", "/model"), ("GET", "/queue")):
        assert worker.http(method, path, events[0] if method == "POST" else None).status == 404
    for faust_page in (
        "/",
        "/router/",
        "/router/x/",
        "/table/",
        "/graph/",
        "/stats/",
        "/performance/",
    ):
        assert worker.http("GET", faust_page).status == 404, faust_page
    assert worker.http("GET", "/healthz").status == 200
    assert worker.stop() == 0, worker.log()


def test_no_model_waits_then_scores(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    events = [valid_event(event_id=f"w-{i}", prospect_id=f"p-{i}") for i in range(40)]
    produce(settings, [event_bytes(e) for e in events])
    worker = workers(settings)
    worker.wait_until(
        lambda: worker.readiness().get("partitions_assigned") is True, 60, "partition assignment"
    )
    ready = worker.http("GET", "/readyz")
    assert ready.status == 503 and ready.body["model_loaded"] is False
    assert worker.metric("callscore_events_consumed_total") == 0
    assert collect(settings, settings.task_topics.values(), lambda r: False, timeout=1.5) == []

    publish_model(settings, version=1)
    worker.wait_ready(30)
    tasks = collect(
        settings, settings.task_topics.values(), lambda r: len(r) >= len(events), 30, settle=0.5
    )
    assert Counter(t.json()["event_id"] for t in tasks) == Counter(e["event_id"] for e in events)
    assert FEATURES  # the contract is what the model was trained on
