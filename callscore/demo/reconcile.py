"""The demo's closing check: produced = scored + dead-lettered, counted on the topics.

The counts come from a fresh read of the topics once the scorer has stopped, not from the live
view: every record on the prospects topic must have been scored (one distinct event id) or
dead-lettered (one distinct source partition and offset), and nothing else.

With the call queue, a scored event is not always a call task: a late or cooling-down event has
only its prediction-log line, and an event of a do-not-call prospect (`suppressed`) has no
record at all on the product's topics, by design (processing for marketing must stop). So
neither the tier topics nor the prediction log alone count what was scored. What is exact is
the queue's own input topic (`call-queue.inputs`): the scorer writes every event it scored there
once, kind `scored`, before the queue decides anything, and a suppressed event leaves that
record and nothing else. So:

  scored     = distinct event ids of the prediction log and of the `scored` inputs (without the
               queue, CALLSCORE_QUEUE_ENABLED=false, there are no inputs: the prediction log is
               every scoring);
  logged     = those on the prediction log (queued, late, cooling down);
  suppressed = scored - logged (no prediction-log line);
  queued     = distinct event ids of the tasks on the tier topics (each with its log line).

The scorer's own `suppressed` count (callscore_queue_inputs_total) is not used for the check: it
counts applications of an input, so a redelivered batch would count an event twice; the summary
shows it beside the topics' number. The call queue's state at the end (open tasks per tier,
withdrawals by reason) is read from the compacted `call-queue` topic as a dialer mirrors it.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from callqueue.inputs import KIND_HEADER
from callqueue.view import QueueView
from core.settings import Settings
from core.topic_reader import Record, TopicReader
from schemas import CallTask, DeadLetter

READ_TIMEOUT_SECONDS = 60.0

Message = TypeVar("Message", CallTask, DeadLetter)


@dataclass
class Reconciliation:
    produced: int = 0
    scored: int = 0
    logged: int = 0  # of the scored: on the prediction log
    suppressed: int = 0  # of the scored: no prediction-log line (do-not-call)
    queued: int = 0  # of the logged: a call task on a tier topic
    dead_lettered: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    dead_by_kind: Counter[str] = field(default_factory=Counter)
    queue_open: dict[str, int] = field(default_factory=dict)
    queue_withdrawals: dict[str, int] = field(default_factory=dict)
    unknown_scored: int = 0  # scored event ids on no prospect record
    unknown_tasks: int = 0  # tasks whose event id is on no prospect record or log line
    unknown_dead_letters: int = 0  # dead letters pointing at no prospect record

    @property
    def reconciles(self) -> bool:
        return (
            self.produced == self.scored + self.dead_lettered
            and self.unknown_scored == 0
            and self.unknown_tasks == 0
            and self.unknown_dead_letters == 0
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "produced": self.produced,
            "scored": self.scored,
            "logged": self.logged,
            "suppressed": self.suppressed,
            "queued": self.queued,
            "dead_lettered": self.dead_lettered,
            "tiers": dict(self.tiers),
            "dead_by_kind": dict(self.dead_by_kind),
            "unknown_scored": self.unknown_scored,
            "unknown_tasks": self.unknown_tasks,
            "unknown_dead_letters": self.unknown_dead_letters,
            "reconciles": self.reconciles,
        }


def count(settings: Settings, records: list[Record]) -> Reconciliation:
    """Distinct prospect records; the scorings (by event id), tasks and dead letters (by source)
    of them; the call queue as its topic leaves it."""
    prospects = settings.topic_prospects
    tier_topics = set(settings.task_topics.values())
    offsets: set[tuple[int, int]] = set()
    event_ids: set[str] = set()
    logged: set[str] = set()
    scored_inputs: set[str] = set()
    tasks: dict[str, CallTask] = {}
    letters: dict[tuple[int, int], DeadLetter] = {}
    queue = QueueView()
    for record in records:
        if record.topic == prospects:
            offsets.add((record.partition, record.offset))
            _add_event_id(event_ids, record.value)
        elif record.topic == settings.topic_predictions:
            _add_event_id(logged, record.value)
        elif record.topic == settings.topic_queue_inputs:
            if record.headers.get(KIND_HEADER) == b"scored":
                _add_event_id(scored_inputs, record.value)
        elif record.topic == settings.topic_queue:
            queue.apply(record.key, record.value, record.headers)
        elif record.topic == settings.topic_dead_letters:
            letter = _parsed(DeadLetter, record.value)
            if letter is not None and letter.source_topic == prospects:
                letters[(letter.source_partition, letter.source_offset)] = letter
        elif record.topic in tier_topics and (task := _parsed(CallTask, record.value)):
            tasks[task.event_id] = task
    scored = logged | scored_inputs
    return Reconciliation(
        produced=len(offsets),
        scored=len(scored),
        logged=len(logged),
        suppressed=len(scored - logged),
        queued=len(tasks),
        dead_lettered=len(letters),
        tiers=Counter(t.priority for t in tasks.values()),
        dead_by_kind=Counter(letter.error_kind for letter in letters.values()),
        queue_open={tier: n for tier, n in queue.open_by_tier().items()},
        queue_withdrawals=queue.withdrawals(),
        unknown_scored=len(scored - event_ids),
        unknown_tasks=len(set(tasks) - (event_ids & logged)),
        unknown_dead_letters=len(set(letters) - offsets),
    )


def _parsed(model: type[Message], value: bytes | None) -> Message | None:
    try:
        return model.model_validate_json(value or b"")
    except ValidationError:
        return None


def _add_event_id(ids: set[str], value: bytes | None) -> None:
    """The record's `event_id`, if it is a JSON object with one (a malformed event has none)."""
    try:
        document = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return
    event_id = document.get("event_id") if isinstance(document, dict) else None
    if isinstance(event_id, str):
        ids.add(event_id)


def reconcile(settings: Settings, kafka_log: logging.Logger) -> Reconciliation:
    """Read the prospects, the prediction log, the queue's scored inputs, the call tasks, the
    call queue and the dead letters to their end and count."""
    topics = [
        settings.topic_prospects,
        settings.topic_predictions,
        settings.topic_queue_inputs,
        settings.topic_queue,
        *settings.task_topics.values(),
        settings.topic_dead_letters,
    ]
    with TopicReader(settings, topics, group_prefix="callscore-demo-check", logger=kafka_log) as r:
        return count(settings, r.read_to_end(READ_TIMEOUT_SECONDS))
