"""What both ceilings do per event, so that they differ only in their Kafka clients: decode the
JSON value, encode it again, and produce it twice, as the scorer produces two records per event
(a call task and its prediction-log line), keyed the same way."""

from __future__ import annotations

import json

from core.settings import Settings
from schemas.tasks import PRIORITIES

# The tier topic the ceilings write to (the scorer's outputs go mostly to the lowest tier).
OUTPUT_TIER = PRIORITIES[-1]


def output_topics(settings: Settings) -> tuple[str, str]:
    """(where the event's first copy goes: watched by the bench, where the second goes)."""
    return settings.task_topic(OUTPUT_TIER), settings.topic_predictions


def outputs(
    settings: Settings, key: bytes | None, value: bytes | None
) -> list[tuple[str, bytes | None, bytes]]:
    """(topic, key, value) of the two records one input event becomes."""
    event = json.loads(value or b"null")
    encoded = json.dumps(event).encode()
    first, second = output_topics(settings)
    return [(first, key, encoded), (second, str(event["event_id"]).encode(), encoded)]
