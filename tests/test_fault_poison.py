"""Fault suite: a poison flood. 10,000 events, 10% malformed across every bad-input kind the
contracts reject, through a running scorer: every good event gets a task, every bad one a dead
letter with its kind, and the scorer's counters reconcile exactly."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any

import pytest

from callscore.simulator.events import events_from_frame
from core.kafka import ensure_topics
from testkit.factories import valid_event
from testkit.harness import collect, event_bytes, produce, publish_model, worker_settings
from trainer.synthetic import synthetic_bank_frame

pytestmark = pytest.mark.slow

EVENTS = 10_000
BAD_SHARE = 0.10
MAX_BYTES = 4096


def _field(i: int, **override: Any) -> bytes:
    return json.dumps(valid_event(event_id=f"bad-{i}", prospect_id=f"bad-{i}", **override)).encode()


def malformed(i: int) -> tuple[bytes, str]:
    """The i-th malformed value and the dead-letter kind it must get; kinds and rules cycle."""
    makers: list[tuple[Any, str]] = [
        (lambda: b"", "empty"),
        (lambda: b"x" * (MAX_BYTES + 1 + i % 50), "too_large"),
        (lambda: b"\xff\xfe" + _field(i), "not_utf8"),
        (lambda: _field(i)[:-7], "not_json"),
        (lambda: b"[" + _field(i) + b"]", "not_object"),
        (lambda: _field(i, duration=120 + i), "post_call_field"),
        (lambda: _field(i, y="yes"), "post_call_field"),
        (lambda: _field(i, age="41"), "invalid_fields"),  # a number sent as a string
        (lambda: _field(i, age=17), "invalid_fields"),  # out of range
        (lambda: _field(i, job="astronaut"), "invalid_fields"),  # outside the UCI value set
        (lambda: _field(i, balance=float("nan")), "invalid_fields"),  # NaN is not JSON
        (lambda: _field(i, occurred_at="2026-11-26T09:00:00"), "invalid_fields"),  # no timezone
        (lambda: _field(i, pdays=-5), "invalid_fields"),
        (lambda: _field(i, campaign=0), "invalid_fields"),
    ]
    make, kind = makers[i % len(makers)]
    return make(), kind


def test_poison_flood_every_good_event_scored_every_bad_one_dead_lettered(
    kafka_settings, tmp_path, workers
):
    settings = worker_settings(kafka_settings, tmp_path, max_message_bytes=MAX_BYTES)
    ensure_topics(settings)
    publish_model(settings, version=1)
    bad_count = int(EVENTS * BAD_SHARE)
    good = events_from_frame(synthetic_bank_frame(rows=EVENTS - bad_count, seed=21), prefix="p")
    bad = [malformed(i) for i in range(bad_count)]
    records = [(event_bytes(e), None) for e in good]
    records += [((f"bad-{i}".encode(), value), kind) for i, (value, kind) in enumerate(bad)]
    random.Random(5).shuffle(records)
    produce(settings, [record for record, _ in records])

    worker = workers(settings)
    worker.wait_ready(90)
    good_ids = {e["event_id"] for e in good}
    tasks = collect(
        settings,
        settings.task_topics.values(),
        lambda r: len({t.json()["event_id"] for t in r}) >= len(good_ids),
        timeout=240,
        settle=1.0,
    )
    letters = collect(
        settings, [settings.topic_dead_letters], lambda r: len(r) >= bad_count, 120, settle=1.0
    )

    assert {t.json()["event_id"] for t in tasks} == good_ids  # nothing lost, nothing invented
    assert len({t.json()["task_id"] for t in tasks}) == len(good_ids)
    by_offset = {(d.json()["source_partition"], d.json()["source_offset"]) for d in letters}
    assert len(letters) == len(by_offset) == bad_count
    assert Counter(d.json()["error_kind"] for d in letters) == Counter(k for _, k in bad)
    assert all(d.json()["message"] for d in letters)  # every one says what broke which rule

    def metric(name: str) -> float:
        return worker.metric(name)

    # Counters move once the broker acknowledged a batch's outputs: wait for the last batch.
    worker.wait_until(
        lambda: (
            metric("callscore_events_scored_total") + metric("callscore_events_dead_lettered_total")
            >= EVENTS
        ),
        timeout=30,
        what="the counters of the last batch",
    )
    consumed = metric("callscore_events_consumed_total")
    scored = metric("callscore_events_scored_total")
    dead = metric("callscore_events_dead_lettered_total")
    duplicates = metric("callscore_duplicates_dropped_total")
    assert consumed == EVENTS and consumed == scored + dead + duplicates
    assert (scored, dead, duplicates) == (len(good_ids), bad_count, 0)
