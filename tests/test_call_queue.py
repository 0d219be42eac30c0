"""The live call queue through a running scorer and a real broker: each rule, and what a dialer
mirroring `call-queue` sees (the newest record per key)."""

from __future__ import annotations

import json
from typing import Any

from core.kafka import ensure_topics
from core.topic_reader import Record
from schemas import WITHDRAWAL_HEADER, task_id_for
from testkit.factories import valid_event
from testkit.harness import collect, event_bytes, produce, publish_model, worker_settings

WAIT_SECONDS = 60


def mirror(records: list[Record]) -> dict[str, Any]:
    """What a dialer mirroring the compacted queue holds: per prospect its open task, or the
    reason its last task was withdrawn."""
    state: dict[str, Any] = {}
    for record in records:
        key = (record.key or b"").decode()
        if record.value is None:
            state[key] = ("withdrawn", record.headers[WITHDRAWAL_HEADER].decode())
        else:
            state[key] = json.loads(record.value)
    return state


def queue_until(settings, done, settle: float = 1.0) -> dict[str, Any]:
    records = collect(
        settings, [settings.topic_queue], lambda r: done(mirror(r)), WAIT_SECONDS, settle
    )
    return mirror(records)


def outcome_for(event: dict[str, Any], called_at: str) -> tuple[bytes, bytes]:
    body = {
        "task_id": task_id_for(event["event_id"]),
        "prospect_id": event["prospect_id"],
        "called_at": called_at,
        "subscribed": False,
        "duration_seconds": 40,
    }
    return event["prospect_id"].encode(), json.dumps(body).encode()


def test_the_two_prospect_sequence(kafka_settings, tmp_path, workers):
    """The issue's sequence: P1 twice, P2 once; an outcome for P1's newest task; a late event."""
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()

    e1 = valid_event(event_id="e1", prospect_id="P1", occurred_at="2026-11-26T09:00:00+00:00")
    e2 = valid_event(
        event_id="e2",
        prospect_id="P1",
        occurred_at="2026-11-26T10:00:00+00:00",
        balance=90_000,
        poutcome="success",
    )
    p2 = valid_event(event_id="p2", prospect_id="P2", occurred_at="2026-11-26T09:30:00+00:00")
    produce(settings, [event_bytes(e) for e in (e1, e2, p2)])
    queue = queue_until(
        settings, lambda q: q.get("P1", {}).get("event_id") == "e2" and "P2" in q
    )
    assert queue["P1"]["supersedes"] == task_id_for("e1")  # one task for P1: the newer one
    assert queue["P2"]["event_id"] == "p2"

    produce(settings, [outcome_for(e2, "2026-11-26T11:00:00+00:00")], settings.topic_outcomes)
    queue = queue_until(settings, lambda q: q.get("P1") == ("withdrawn", "closed"))
    late = valid_event(event_id="e0", prospect_id="P1", occurred_at="2026-11-25T09:00:00+00:00")
    soon = valid_event(event_id="e3", prospect_id="P1", occurred_at="2026-11-27T09:00:00+00:00")
    produce(settings, [event_bytes(late), event_bytes(soon)])
    worker.wait_until(
        lambda: worker.metric("callscore_queue_inputs_total", 'result="late"') == 1
        and worker.metric("callscore_queue_inputs_total", 'result="cooling_down"') == 1,
        WAIT_SECONDS,
        "the late and the cooling-down event",
    )
    queue = queue_until(settings, lambda q: True)
    assert queue["P1"] == ("withdrawn", "closed")  # neither reopened the called prospect

    # Every event is on the prediction log; the tier topics got the three tasks that opened.
    predictions = collect(
        settings, [settings.topic_predictions], lambda r: len(r) >= 5, WAIT_SECONDS, 0.5
    )
    assert sorted(r.key.decode() for r in predictions) == ["e0", "e1", "e2", "e3", "p2"]
    tiers = collect(settings, list(settings.task_topics.values()), lambda r: len(r) >= 3, 30, 1)
    assert sorted(r.json()["event_id"] for r in tiers) == ["e1", "e2", "p2"]


def test_do_not_call_withdraws_suppresses_and_lifts(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()

    first = valid_event(event_id="d1", prospect_id="D", occurred_at="2026-11-26T09:00:00+00:00")
    produce(settings, [event_bytes(first)])
    queue_until(settings, lambda q: q.get("D", {}).get("event_id") == "d1", settle=0)
    entry = {"prospect_id": "D", "requested_at": "2026-11-26T09:30:00+00:00", "source": "agent"}
    produce(settings, [(b"D", json.dumps(entry).encode())], settings.topic_do_not_call)
    queue = queue_until(settings, lambda q: q.get("D") == ("withdrawn", "suppressed"))

    later = valid_event(event_id="d2", prospect_id="D", occurred_at="2026-11-26T12:00:00+00:00")
    produce(settings, [event_bytes(later)])
    worker.wait_until(
        lambda: worker.metric("callscore_queue_inputs_total", 'result="suppressed"') == 1,
        WAIT_SECONDS,
        "the suppressed event",
    )
    predictions = collect(settings, [settings.topic_predictions], lambda r: len(r) >= 1, 10, 1)
    assert [r.key for r in predictions] == [b"d1"]  # no prediction-log line while objected

    produce(settings, [(b"D", None)], settings.topic_do_not_call)  # the tombstone lifts it
    worker.wait_until(
        lambda: worker.metric("callscore_queue_inputs_total", 'result="lifted"') == 1,
        WAIT_SECONDS,
        "the lift",
    )
    again = valid_event(event_id="d3", prospect_id="D", occurred_at="2026-11-26T13:00:00+00:00")
    produce(settings, [event_bytes(again)])
    queue = queue_until(settings, lambda q: q.get("D", {}).get("event_id") == "d3", settle=0)
    assert queue["D"]["supersedes"] is None  # the suppressed task was withdrawn, not replaced
