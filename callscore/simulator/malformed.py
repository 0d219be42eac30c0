"""Malformed extras for a replay: one kind per rule the contracts enforce, each of which the
decoders reject, published right after a good record so that the stream carries both."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from callscore.simulator.records import (
    BAD_EVENT,
    BAD_OUTCOME,
    RecordKind,
    ScheduledRecord,
)

BAD_EVENT_KINDS: tuple[str, ...] = (
    "not_json",
    "not_object",
    "wrong_type",
    "out_of_range",
    "unknown_category",
    "post_call_field",
    "empty",
)
BAD_OUTCOME_KINDS: tuple[str, ...] = (
    "not_json",
    "not_object",
    "wrong_type",
    "out_of_range",
    "missing_reference",
    "empty",
)


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _half_json(body: dict[str, Any]) -> bytes:
    text = json.dumps(body)
    return text[: len(text) // 2].encode()


def bad_event(kind: str, event: dict[str, Any], bad_id: str, rng: np.random.Generator) -> bytes:
    body = {**event, "event_id": bad_id, "prospect_id": bad_id}
    if kind == "not_json":
        return _half_json(body)
    if kind == "not_object":
        return compact_json([body])
    if kind == "wrong_type":
        return compact_json({**body, "age": str(body["age"])})
    if kind == "out_of_range":
        return compact_json({**body, "age": 150})
    if kind == "unknown_category":
        return compact_json({**body, "job": "astronaut"})
    if kind == "post_call_field":
        # A made-up call length, not the row's: even a rejected event must not carry a label.
        return compact_json({**body, "duration": int(rng.integers(1, 1000))})
    assert kind == "empty", kind
    return b""


def bad_outcome(kind: str, outcome: dict[str, Any], bad_id: str) -> bytes:
    body = {k: v for k, v in outcome.items() if k != "task_id"} | {"event_id": bad_id}
    if kind == "not_json":
        return _half_json(body)
    if kind == "not_object":
        return compact_json([body])
    if kind == "wrong_type":
        return compact_json({**body, "subscribed": "yes"})
    if kind == "out_of_range":
        return compact_json({**body, "duration_seconds": -1})
    if kind == "missing_reference":
        return compact_json({k: v for k, v in body.items() if k != "event_id"})
    assert kind == "empty", kind
    return b""


def bad_records(
    kind: RecordKind,
    good: list[ScheduledRecord],
    events_by_rank: list[dict[str, Any]],
    bad_rate: float,
    id_prefix: str,
    rng: np.random.Generator,
) -> list[ScheduledRecord]:
    """round(bad_rate x good) malformed extras, each published right after a good record."""
    count = round(bad_rate * len(good))
    if count == 0:
        return []
    kinds = BAD_EVENT_KINDS if kind == "event" else BAD_OUTCOME_KINDS
    anchors = np.sort(rng.choice(len(good), size=count, replace=False))
    # Every rule appears once the count allows it; which record gets which is random.
    rules = [kinds[j % len(kinds)] for j in range(count)]
    rng.shuffle(rules)
    bad = []
    for n, (anchor, rule) in enumerate(zip(anchors, rules, strict=True)):
        near = good[int(anchor)]
        bad_id = f"{id_prefix}-bad-{kind}-{n}"
        if kind == "event":
            value = bad_event(rule, events_by_rank[near.order[0]], bad_id, rng)
            sub = BAD_EVENT
        else:
            value = bad_outcome(rule, json.loads(near.value or b"{}"), bad_id)
            sub = BAD_OUTCOME
        bad.append(
            ScheduledRecord(
                near.at, (near.order[0], sub), kind, bad_id.encode(), value, bad_id, None, rule
            )
        )
    return bad
