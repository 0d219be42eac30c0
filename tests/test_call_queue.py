"""The live call queue through a running scorer and a real broker: each rule, and what a dialer
mirroring `call-queue` sees (the newest record per key)."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callqueue.inputs import KIND_HEADER, decode_input
from callqueue.rules import QueuePolicy
from callqueue.view import QueueView
from core.kafka import ensure_topics
from core.topic_reader import Record, read_topics
from schemas import WITHDRAWAL_HEADER, task_id_for
from streamer.scoring import feature_frame
from testkit.factories import valid_event
from testkit.harness import (
    as_event,
    collect,
    committed_offsets,
    event_bytes,
    produce,
    publish_model,
    worker_settings,
)
from testkit.queue_reference import Lift, queue_state_of, reference_deployment

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
    queue = queue_until(settings, lambda q: q.get("P1", {}).get("event_id") == "e2" and "P2" in q)
    assert queue["P1"]["supersedes"] == task_id_for("e1")  # one task for P1: the newer one
    assert queue["P2"]["event_id"] == "p2"

    produce(settings, [outcome_for(e2, "2026-11-26T11:00:00+00:00")], settings.topic_outcomes)
    queue = queue_until(settings, lambda q: q.get("P1") == ("withdrawn", "closed"))
    late = valid_event(event_id="e0", prospect_id="P1", occurred_at="2026-11-25T09:00:00+00:00")
    soon = valid_event(event_id="e3", prospect_id="P1", occurred_at="2026-11-27T09:00:00+00:00")
    produce(settings, [event_bytes(late), event_bytes(soon)])
    worker.wait_until(
        lambda: (
            worker.metric("callscore_queue_inputs_total", 'result="late"') == 1
            and worker.metric("callscore_queue_inputs_total", 'result="cooling_down"') == 1
        ),
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


def test_a_call_without_a_decision_comes_back_rescored_then_an_objection_ends_it(
    kafka_settings, tmp_path, workers
):
    """no_answer: the prospect comes back one attempt later, scored by the serving model and not
    due before the delay; do_not_call on that task: withdrawn, and on the do-not-call list."""
    settings = worker_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    artifact = publish_model(settings, version=1)
    worker = workers(settings)
    worker.wait_ready()

    first = valid_event(event_id="r1", prospect_id="R", campaign=1, pdays=-1, previous=0)
    produce(settings, [event_bytes(first)])
    queue_until(settings, lambda q: q.get("R", {}).get("event_id") == "r1", settle=0)
    called = datetime.now(UTC) + timedelta(days=1)  # the retry is due a day and 4 hours from now
    no_answer = {
        "task_id": task_id_for("r1"),
        "prospect_id": "R",
        "called_at": called.isoformat(),
        "disposition": "no_answer",
    }
    produce(settings, [(b"R", json.dumps(no_answer).encode())], settings.topic_outcomes)
    queue = queue_until(settings, lambda q: isinstance(q.get("R"), dict) and "retry_of" in q["R"])
    task = queue["R"]
    assert (task["attempt"], task["retry_of"]) == (2, task_id_for("r1"))
    assert datetime.fromisoformat(task["not_before"]) == called + timedelta(
        hours=settings.retry_after_no_answer_hours
    )
    (retry,) = [
        r.json()
        for r in collect(settings, [settings.topic_prospects], lambda r: len(r) >= 2, 10, 0.5)
        if r.json()["event_id"] == task["event_id"]
    ]
    assert (retry["campaign"], retry["pdays"], retry["previous"]) == (2, -1, 0)
    # the serving model on the changed features
    (expected,) = artifact.predict(feature_frame([as_event(retry)]))
    assert task["score"] == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    # open, and not served before it is due (what GET /queue answers from this topic)
    view = QueueView()
    retried = lambda records: mirror(records)["R"] == task  # noqa: E731
    for record in collect(settings, [settings.topic_queue], retried, WAIT_SECONDS):
        view.apply(record.key, record.value, record.headers)
    top = view.top(10)
    assert (top.tasks, top.not_due) == ([], 1)

    objection = {**no_answer, "task_id": task["task_id"], "disposition": "do_not_call"}
    produce(settings, [(b"R", json.dumps(objection).encode())], settings.topic_outcomes)
    queue = queue_until(settings, lambda q: q.get("R") == ("withdrawn", "suppressed"))
    listed = collect(settings, [settings.topic_do_not_call], lambda r: len(r) >= 1, 10, 0)
    assert [(r.key, r.json()["source"]) for r in listed] == [(b"R", "call-outcome")]
    # Neither outcome is a label.
    assert worker.metric("callscore_queue_inputs_total", 'result="recycled"') == 1


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


# --- the queue against the reference model, after a mixed stream ----------------------------
PROSPECTS = 24


def mixed_stream(seed: int, start: datetime, days: int, prefix: str) -> list[dict[str, Any]]:
    """Events of a few prospects over `days`: repeats, out-of-order (late) ones, long gaps
    (expiry), produced roughly in time order with jitter."""
    rng = random.Random(seed)
    events = []
    for i in range(PROSPECTS * 3):
        at = start + timedelta(hours=rng.uniform(0, 24 * days))
        events.append(
            valid_event(
                event_id=f"{prefix}-{i}",
                prospect_id=f"P{rng.randrange(PROSPECTS)}",
                occurred_at=at.isoformat(),
                balance=rng.randrange(0, 20_000),
                campaign=rng.randrange(1, 6),
            )
        )
    events.sort(key=lambda e: e["occurred_at"])
    # After a fifth of them, a late one of the same prospect: dated up to two days before.
    for i in sorted(rng.sample(range(len(events)), len(events) // 5), reverse=True):
        at = datetime.fromisoformat(events[i]["occurred_at"]) - timedelta(hours=rng.uniform(1, 48))
        late = {**events[i], "event_id": f"{prefix}-late-{i}", "occurred_at": at.isoformat()}
        events.insert(i + 1, late)
    return events


def outcomes_and_objections(
    seed: int, events: list[dict[str, Any]], at: datetime
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes | None]]]:
    rng = random.Random(seed)
    called = rng.sample(events, len(events) // 4)  # some open, some superseded or expired
    outcomes = [
        outcome_for(e, (at + timedelta(minutes=i)).isoformat()) for i, e in enumerate(called)
    ]
    objecting = rng.sample(range(PROSPECTS), 4)
    entries: list[tuple[bytes, bytes | None]] = [
        (
            f"P{i}".encode(),
            json.dumps({"prospect_id": f"P{i}", "requested_at": at.isoformat()}).encode(),
        )
        for i in objecting
    ]
    entries.append((f"P{objecting[0]}".encode(), None))  # and one lifted again
    return outcomes, entries


def inputs_applied(settings, expected: int) -> bool:
    """Every record of the queue's input topic applied and committed by the queue's group."""
    records = read_topics(settings, [settings.topic_queue_inputs], timeout=30)
    if len(records) < expected:
        return False
    ends: dict[int, int] = {}
    for record in records:
        ends[record.partition] = max(ends.get(record.partition, 0), record.offset + 1)
    group = f"{settings.streamer_app_id}-queue"
    committed = committed_offsets(settings, group, settings.topic_queue_inputs)
    return all(committed.get(p, 0) >= end for p, end in ends.items())


def reference_inputs(settings) -> list[Any]:
    """The input topic's records in partition order, as the reference model's inputs."""
    inputs: list[Any] = []
    records = read_topics(settings, [settings.topic_queue_inputs], timeout=30)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        item = decode_input(
            record.key, record.value, record.headers.get(KIND_HEADER), record.partition, 0
        )
        if item.kind == "scored":
            inputs.append(item.prediction)
        elif item.kind == "outcome":
            inputs.append(item.outcome)
        else:
            inputs.append(item.entry if item.entry is not None else Lift(item.prospect_id))
    return inputs


def check_against_reference(settings, produced: int, every_rule: bool = True) -> None:
    """Once the queue's group committed every input, the `call-queue` topic equals the
    reference model run over the input topic's records in partition order, key by key."""
    deadline = time.monotonic() + 120
    while not inputs_applied(settings, produced):
        assert time.monotonic() < deadline, "the queue did not apply every input in 120 s"
        time.sleep(1)
    policy = QueuePolicy.of(settings)
    expected = reference_deployment(
        reference_inputs(settings),
        policy.task_ttl,
        policy.recontact_after,
        settings.partitions,
        policy.forget_after,
    )
    queue = read_topics(settings, [settings.topic_queue], timeout=30)
    got = queue_state_of(
        (r.key, r.value, list(r.headers.items()))
        for r in sorted(queue, key=lambda r: (r.partition, r.offset))
    )
    assert set(got) == set(expected.final)
    for prospect_id, state in expected.final.items():
        assert got[prospect_id] == state, prospect_id
    if every_rule:  # the stream exercised the rules (its inputs reached the queue in phases)
        assert expected.counts["withdrawn.expired"] > 0 and expected.counts["late"] > 0
        assert expected.counts["withdrawn.closed"] > 0
        assert expected.counts["withdrawn.suppressed"] + expected.counts["suppressed"] > 0


def test_the_queue_equals_the_reference_model_across_a_restart(kafka_settings, tmp_path, workers):
    """Events from both partitioners, outcomes, objections and a lift, with a restart of the
    scorer in the middle: the final queue equals the reference model's, key by key."""
    settings = worker_settings(kafka_settings, tmp_path, partitions=4)
    ensure_topics(settings)
    publish_model(settings, version=1)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    first = mixed_stream(1, start, 30, "a")
    second = mixed_stream(2, start + timedelta(days=30), 30, "b")
    outcomes, entries = outcomes_and_objections(3, first, start + timedelta(days=20))

    worker = workers(settings, "w1")
    worker.wait_ready()
    half = len(first) // 2
    produce(settings, [event_bytes(e) for e in first[:half]])
    produce(settings, [event_bytes(e) for e in first[half:]], partitioner="murmur2_random")
    # The events queued first: outcomes are routed faster than events are scored, and an
    # outcome that overtook its task would be stale (the check would still hold, not the rules'
    # coverage).
    check_against_reference(settings, len(first), every_rule=False)
    produce(settings, outcomes, settings.topic_outcomes, partitioner="murmur2_random")
    produce(settings, entries, settings.topic_do_not_call)
    check_against_reference(settings, len(first) + len(outcomes) + len(entries))
    assert worker.stop() == 0

    again = workers(settings, "w2")  # rebuilds every partition from the changelog
    again.wait_ready()
    produce(settings, [event_bytes(e) for e in second], partitioner="murmur2_random")
    check_against_reference(settings, len(first) + len(outcomes) + len(entries) + len(second))


@pytest.mark.slow
def test_two_replicas_one_killed_mid_stream_equal_the_reference(kafka_settings, tmp_path, workers):
    settings = worker_settings(kafka_settings, tmp_path, partitions=4)
    ensure_topics(settings)
    publish_model(settings, version=1)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    events = mixed_stream(4, start, 60, "k")
    outcomes, entries = outcomes_and_objections(5, events, start + timedelta(days=25))
    one = workers(settings, "r1")
    two = workers(worker_settings(settings, tmp_path, "r2"), "r2")
    one.wait_ready()
    two.wait_ready()
    third = len(events) // 3
    produce(settings, [event_bytes(e) for e in events[:third]])
    produce(settings, outcomes[: len(outcomes) // 2], settings.topic_outcomes)
    time.sleep(0.5)  # mid-stream: some batches applied, some in flight
    one.kill()
    produce(settings, [event_bytes(e) for e in events[third:]], partitioner="murmur2_random")
    produce(settings, outcomes[len(outcomes) // 2 :], settings.topic_outcomes)
    produce(settings, entries, settings.topic_do_not_call)
    total = len(events) + len(outcomes) + len(entries)
    check_against_reference(settings, total, every_rule=False)  # interleaved by design


def test_a_restart_restores_every_entry_written_across_many_batches(
    kafka_settings, tmp_path, workers
):
    """Recovery reads the changelog to partition EOF, not to a watermark (which the local
    broker reports wrong): every open task written over dozens of batches is back."""
    settings = worker_settings(kafka_settings, tmp_path, batch_max_size=10)
    ensure_topics(settings)
    publish_model(settings, version=1)
    prospects = 300
    events = [valid_event(event_id=f"m-{i}", prospect_id=f"M{i}") for i in range(prospects)]
    worker = workers(settings, "before")
    worker.wait_ready()
    for start in range(0, prospects, 25):
        produce(settings, [event_bytes(e) for e in events[start : start + 25]])
    worker.wait_until(
        lambda: worker.metric("callscore_queue_open_tasks") == prospects,
        WAIT_SECONDS,
        "every prospect's task open",
    )
    assert worker.metric("callscore_queue_inputs_total", 'result="queued"') == prospects
    assert worker.stop() == 0

    again = workers(settings, "after")
    again.wait_ready()
    again.wait_until(
        lambda: again.metric("callscore_queue_open_tasks") == prospects,
        WAIT_SECONDS,
        "every open task rebuilt from the changelog",
    )
    assert again.metric("callscore_queue_inputs_total") == 0  # rebuilt, not reapplied
