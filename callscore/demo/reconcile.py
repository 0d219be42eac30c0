"""The demo's closing check: produced = scored + dead-lettered, counted on the topics.

The counts come from a fresh read of the topics once the scorer has stopped, not from the live
view: every record on the prospects topic must have become either a call task (one distinct
event id) or a dead letter (one distinct source partition and offset), and nothing else.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from core.settings import Settings
from core.topic_reader import Record, TopicReader
from schemas import CallTask, DeadLetter

READ_TIMEOUT_SECONDS = 60.0

Message = TypeVar("Message", CallTask, DeadLetter)


@dataclass
class Reconciliation:
    produced: int = 0
    scored: int = 0
    dead_lettered: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    dead_by_kind: Counter[str] = field(default_factory=Counter)
    unknown_tasks: int = 0  # tasks whose event id is on no prospect record
    unknown_dead_letters: int = 0  # dead letters pointing at no prospect record

    @property
    def reconciles(self) -> bool:
        return (
            self.produced == self.scored + self.dead_lettered
            and self.unknown_tasks == 0
            and self.unknown_dead_letters == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "scored": self.scored,
            "dead_lettered": self.dead_lettered,
            "tiers": dict(self.tiers),
            "dead_by_kind": dict(self.dead_by_kind),
            "unknown_tasks": self.unknown_tasks,
            "unknown_dead_letters": self.unknown_dead_letters,
            "reconciles": self.reconciles,
        }


def count(settings: Settings, records: list[Record]) -> Reconciliation:
    """Distinct prospect records, the tasks (by event id) and dead letters (by source) of them."""
    prospects = settings.topic_prospects
    offsets: set[tuple[int, int]] = set()
    event_ids: set[str] = set()
    tasks: dict[str, CallTask] = {}
    letters: dict[tuple[int, int], DeadLetter] = {}
    for record in records:
        if record.topic == prospects:
            offsets.add((record.partition, record.offset))
            event_id = _event_id(record.value)
            if event_id is not None:
                event_ids.add(event_id)
        elif record.topic == settings.topic_dead_letters:
            letter = _parsed(DeadLetter, record.value)
            if letter is not None and letter.source_topic == prospects:
                letters[(letter.source_partition, letter.source_offset)] = letter
        elif (task := _parsed(CallTask, record.value)) is not None:
            tasks[task.event_id] = task
    return Reconciliation(
        produced=len(offsets),
        scored=len(tasks),
        dead_lettered=len(letters),
        tiers=Counter(t.priority for t in tasks.values()),
        dead_by_kind=Counter(letter.error_kind for letter in letters.values()),
        unknown_tasks=len(set(tasks) - event_ids),
        unknown_dead_letters=len(set(letters) - offsets),
    )


def _parsed(model: type[Message], value: bytes | None) -> Message | None:
    try:
        return model.model_validate_json(value or b"")
    except ValidationError:
        return None


def _event_id(value: bytes | None) -> str | None:
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    event_id = document.get("event_id") if isinstance(document, dict) else None
    return event_id if isinstance(event_id, str) else None


def reconcile(settings: Settings, kafka_log: logging.Logger) -> Reconciliation:
    """Read the prospects, the call tasks and the dead letters to their end and count."""
    topics = [settings.topic_prospects, *settings.task_topics.values(), settings.topic_dead_letters]
    with TopicReader(settings, topics, group_prefix="callscore-demo-check", logger=kafka_log) as r:
        return count(settings, r.read_to_end(READ_TIMEOUT_SECONDS))
